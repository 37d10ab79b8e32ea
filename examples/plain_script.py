"""A plain script: wrap the clients, tag calls with a context, read the rolling stats.

Run it against the fake provider (what the test suite does) or the real APIs:

    .venv/bin/llmpulse fake-provider --port 8080 &
    OPENAI_BASE_URL=http://127.0.0.1:8080/v1 ANTHROPIC_BASE_URL=http://127.0.0.1:8080 \
    OPENAI_API_KEY=sk-x ANTHROPIC_API_KEY=sk-x .venv/bin/python examples/plain_script.py
"""

from __future__ import annotations

from anthropic import Anthropic
from openai import OpenAI

import llmpulse


def main() -> None:
    openai_client = llmpulse.wrap(OpenAI())
    anthropic_client = llmpulse.wrap(Anthropic())

    with llmpulse.interaction("answer-ticket", tenant="acme", route="/tickets/{id}"):
        draft = openai_client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Draft a reply to ticket 42."}],
            max_tokens=60,
        )
        with anthropic_client.messages.stream(
            model="claude-haiku-4-5",
            max_tokens=60,
            messages=[
                {"role": "user", "content": f"Make this friendlier: {draft.choices[0].message.content}"}
            ],
        ) as stream:
            reply = "".join(stream.text_stream)

    llmpulse.flush()
    total = llmpulse.stats().total
    print(f"reply: {reply[:60]}...")
    print(f"calls={total.calls} p95={total.p95_s:.3f}s tokens={total.input_tokens + total.output_tokens}")
    print(f"cost=${total.cost_usd:.6f}")


if __name__ == "__main__":
    main()
