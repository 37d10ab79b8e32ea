"""What watching a stream costs per network read, for servers that spell SSE differently.

Drives the real per-read path, ``BodyWatcher.feed`` (retention, first-output
search, usage-chunk stripping) and ``drain`` (``Call.feed``/``drain`` in releases
before the body watcher), of a call started by a wrapped
``openai.OpenAI`` client, over a 64-chunk chat stream rendered the way
different servers write it; then the end-of-stream parse (``parse_stream`` and
the terminal check). No HTTP: only llmpulse's own work is timed.

It measures whichever llmpulse is importable, old (byte markers,
``UsageChunkFilter``) or new (``StreamWatch``). ``--compare SRC`` also runs it
on another checkout's ``src`` in a subprocess and prints both side by side:

    mkdir -p /tmp/before && git archive 5737675 src | tar -x -C /tmp/before   # the byte markers
    PYTHONPATH=src .venv/bin/python benchmarks/sse.py --compare /tmp/before/src

Times are the best of ``--rounds`` (the machine's other work only adds to
them). The "hidden" and "TTFT" columns say whether the usage-only chunk was removed
(strip mode) and whether the first output was found: the old code did
neither for servers that write spaced JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time
from typing import Any

CHUNKS = 64
STYLES = {
    # name: (JSON separators, line ending)
    "compact": ((",", ":"), "\n"),
    "spaced": ((", ", ": "), "\n"),
    "spaced+CRLF": ((", ", ": "), "\r\n"),
}


def stream(style: str) -> tuple[list[bytes], bytes]:
    """The events of a chat stream (as OpenAI's servers shape them) and its usage-only event."""
    separators, eol = STYLES[style]
    base = {
        "id": "chatcmpl-Bz3x5nLq7ZbWc1tY8aRkV2fJ0uHdE",
        "object": "chat.completion.chunk",
        "created": 1_763_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "service_tier": "default",
        "system_fingerprint": "fp_560af6e559",
        "usage": None,
    }

    def event(obj: Any) -> bytes:
        return f"data: {json.dumps(obj, separators=separators)}{eol}{eol}".encode()

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return event({**base, "choices": [choice]})

    words = ("the", " on-call", " engineer", " reads", " the", " dashboard", " and", " sees")
    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": words[i % len(words)]}) for i in range(CHUNKS)]
    events.append(chunk({}, "stop"))
    usage = {"prompt_tokens": 23, "completion_tokens": CHUNKS, "total_tokens": 23 + CHUNKS}
    usage_event = event({**base, "choices": [], "usage": usage})
    events += [usage_event, f"data: [DONE]{eol}{eol}".encode()]
    return events, usage_event


def reads(events: list[bytes], how: str, rng: random.Random) -> list[bytes]:
    """One event per read, or the same bytes cut at random (about one cut per event)."""
    if how == "event per read":
        return list(events)
    data = b"".join(events)
    cuts = sorted(rng.sample(range(1, len(data)), len(events)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def new_call(hook: Any, body: bytes) -> tuple[Any, Any]:
    """A call as the transport starts it, answered 200 with an event stream, and what reads its body."""
    import httpx2

    request = httpx2.Request(
        "POST",
        "http://127.0.0.1:9/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
    )
    call = hook.start_call(request)
    call._status = 200
    call._headers = {"content-type": "text/event-stream"}
    try:
        return call, call.observe_body({"content-type": "text/event-stream"})
    except TypeError:  # before the body watcher: the call read its body itself
        call.observe_body()
        return call, call


def measure(rounds: int) -> list[dict[str, Any]]:
    import openai

    import llmpulse

    llmpulse.configure(sinks=("none",))
    client = llmpulse.wrap(openai.OpenAI(api_key="sk-bench", base_url="http://127.0.0.1:9/v1", max_retries=0))
    hook = getattr(client, "_llmpulse_hook", None)  # releases before the registry kept it on the client
    if hook is None:
        from llmpulse._registry import hook_of

        hook = hook_of(client)
    provider = hook.provider
    new_api = hasattr(provider, "stream_watch")
    rng = random.Random(7)
    results = []
    for style in STYLES:
        events, usage_event = stream(style)
        whole = b"".join(events)
        for strip in (True, False):
            options = {} if strip else {"stream_options": {"include_usage": True}}
            body = json.dumps({"model": "gpt-4o-mini", "messages": [], "stream": True, **options}).encode()

            for how in ("event per read", "random cuts"):
                pieces = reads(events, how, rng)
                times = []
                gc.disable()
                for _ in range(rounds):
                    call, watcher = new_call(hook, body)
                    t0 = time.perf_counter()
                    out = [watcher.feed(piece) for piece in pieces]
                    out.append(watcher.drain())
                    times.append(time.perf_counter() - t0)
                gc.enable()
                passed = b"".join(out)
                results.append(
                    {
                        "style": style,
                        "strip": strip,
                        "reads": how,
                        "us_per_read": min(times) / len(pieces) * 1e6,
                        "hidden": passed == whole.replace(usage_event, b"") if strip else None,
                        "ttft": getattr(watcher, "content_at", getattr(call, "_content_at", None))
                        is not None,
                    }
                )
            info = new_call(hook, body)[0]._info
            finish = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                parsed = provider.parse_stream(info, whole)
                if new_api:
                    terminal = parsed.terminal is True
                else:
                    terminal = any(m in whole for m in provider.stream_format(info).terminal_markers)
                finish.append(time.perf_counter() - t0)
            results[-1]["parse_us"] = min(finish) * 1e6
            results[-1]["usage_read"] = parsed.input_tokens == 23 and terminal
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--compare", metavar="SRC", help="also measure the llmpulse in this src directory")
    parser.add_argument("--json", action="store_true", help="print the results as JSON (used by --compare)")
    args = parser.parse_args()
    after = measure(args.rounds)
    if args.json:
        print(json.dumps(after))
        return
    before = None
    if args.compare:
        env = {**os.environ, "PYTHONPATH": args.compare}
        out = subprocess.run(
            [sys.executable, __file__, "--json", "--rounds", str(args.rounds)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        before = json.loads(out)
    runs = [("before", before), ("after", after)] if before else [("", after)]
    header = f"{'server':<13}{'mode':<10}{'reads':<16}"
    for label, _ in runs:
        header += f"{label + ' µs/read':>16}{'hidden':>8}{'TTFT':>6}"
    print(header)
    for i, row in enumerate(after):
        line = f"{row['style']:<13}{'strip' if row['strip'] else 'no strip':<10}{row['reads']:<16}"
        for _, results in runs:
            assert results is not None
            r = results[i]
            hidden = "-" if r["hidden"] is None else ("yes" if r["hidden"] else "NO")
            line += f"{r['us_per_read']:>16.2f}{hidden:>8}{'yes' if r['ttft'] else 'NO':>6}"
        print(line)
    print()
    columns = "".join(f"{label + ' parse µs/stream':>24}{'usage':>7}" for label, _ in runs)
    print(f"{'server':<13}{'mode':<10}{columns}")
    for i, row in enumerate(after):
        if "parse_us" not in row:
            continue
        line = f"{row['style']:<13}{'strip' if row['strip'] else 'no strip':<10}"
        for _, results in runs:
            assert results is not None
            r = results[i]
            line += f"{r['parse_us']:>24.1f}{'yes' if r['usage_read'] else 'NO':>7}"
        print(line)


if __name__ == "__main__":
    main()
