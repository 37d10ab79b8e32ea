"""Rolling stats without Prometheus: `llmpulse.stats()` per tenant and model, within 1 %.

Makes calls for three tenants with one streaming route, then reads the last
five minutes: the printed snapshot (durations to the 3 significant figures
the 1 % sketch supports), one tenant's fields, and the JSON a health
endpoint could return. See docs/stats.md.

    .venv/bin/llmpulse fake-provider --port 8080 &
    OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=sk-x .venv/bin/python examples/rolling_stats.py
"""

from __future__ import annotations

import json

from openai import OpenAI

import llmpulse

TENANTS = ("acme", "globex", "initech")


def main() -> None:
    client = llmpulse.wrap(OpenAI())
    for i in range(12):
        with llmpulse.context(tenant=TENANTS[i % 3], route="/chat"):
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], max_tokens=20
            )
        with llmpulse.context(tenant=TENANTS[i % 3], route="/stream"):
            for _ in client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], max_tokens=20, stream=True
            ):
                pass

    snapshot = llmpulse.stats(window_s=300)
    print(snapshot)  # the total, then one line per model, route and tenant

    acme = snapshot.by_tenant["acme"]
    # Plain floats in seconds (None without calls), within 1 %: 3 significant figures, not all 17.
    if acme.p95_s is not None and acme.ttft_p50_s is not None:
        p95_ms, ttft_ms = acme.p95_s * 1000, acme.ttft_p50_s * 1000
        print(f"acme: {acme.calls} calls, p95 {p95_ms:.3g} ms, TTFT p50 {ttft_ms:.3g} ms")
    print(json.dumps(snapshot.to_dict()["total"], sort_keys=True)[:80] + "...")


if __name__ == "__main__":
    main()
