"""A workload process for tests/test_deploy.py: a wrapped ``openai`` client calling the fake provider.

Usage: ``python tests/prometheus_workload.py OPENAI_BASE_URL``. It serves llmpulse's metrics
on a free 127.0.0.1 port and prints ``{"metrics_port": N}``, then obeys one command per line
on stdin, answering each with one JSON line on stdout:

Every call is made for tenant ``acme`` on route ``/chat``.

- ``burst N``: make N calls from 8 threads, then answer with llmpulse's own statistics
  (``llmpulse.stats()``: calls, p95).
- ``loop``: keep calling from 2 threads in the background, until ``quit`` or end of input.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import openai

import llmpulse

MODEL = "gpt-4o-mini"
TENANT = "acme"
ROUTE = "/chat"


def main() -> int:
    base_url = sys.argv[1]
    llmpulse.configure(sinks=("none",))
    # No retries and no breaker: each call is one attempt, and a 5xx answer stays the call's outcome.
    policies = llmpulse.Policies(max_retries=0, breaker=None)
    raw = openai.OpenAI(api_key="sk-test-workload", base_url=base_url, max_retries=0)
    client = llmpulse.wrap(raw, policies=policies)
    server = llmpulse.start_metrics_server(0)
    stop = threading.Event()

    def call() -> None:
        # 5xx answers are the point of the fault phase.
        with contextlib.suppress(openai.APIError), llmpulse.context(tenant=TENANT, route=ROUTE):
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])

    def loop() -> None:
        while not stop.is_set():
            call()

    def answer(obj: object) -> None:
        print(json.dumps(obj), flush=True)

    answer({"metrics_port": server.port})
    threads: list[threading.Thread] = []
    for line in sys.stdin:
        command, *args = line.split()
        if command == "burst":
            with ThreadPoolExecutor(8) as pool:
                for future in [pool.submit(call) for _ in range(int(args[0]))]:
                    future.result()
            total = llmpulse.stats(window_s=3600).total
            answer({"calls": total.calls, "p95_s": total.p95_s})
        elif command == "loop":
            threads = [threading.Thread(target=loop, daemon=True) for _ in range(2)]
            for thread in threads:
                thread.start()
            answer({"looping": True})
        elif command == "quit":
            break
    stop.set()
    for thread in threads:
        thread.join(10)
    server.stop()
    raw.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
