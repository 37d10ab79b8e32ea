"""Cross-provider fallback: when Anthropic is overloaded, serve the call on OpenAI.

llmpulse decides when (a 529/503 that outlasted the retries and the fallback
models, an open circuit, a full queue) and calls ``serve``; ``serve`` only
translates: the Anthropic request into an OpenAI chat call made on a wrapped
client, and its answer back into the Messages format the caller's SDK parses.
It declines (returns None) what it cannot translate faithfully: tools,
images, documents.

Run it against the fake provider (what the test suite does) or the real APIs:

    .venv/bin/llmpulse fake-provider --port 8080 &
    OPENAI_BASE_URL=http://127.0.0.1:8080/v1 ANTHROPIC_BASE_URL=http://127.0.0.1:8080 \
    OPENAI_API_KEY=sk-x ANTHROPIC_API_KEY=sk-x .venv/bin/python examples/cross_provider_fallback.py
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from anthropic import Anthropic
from openai import OpenAI

import llmpulse
from llmpulse.testing import CapturingSink

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}


def _text(content: Any) -> str | None:
    """The text of a Messages API content field; None if it holds anything but text."""
    if isinstance(content, str):
        return content
    if all(isinstance(block, dict) and block.get("type") == "text" for block in content):
        return "".join(block["text"] for block in content)
    return None


def serve_on_openai(client: OpenAI, model: str = "gpt-4o-mini") -> Callable[[llmpulse.UnavailableCall], Any]:
    """A ``cross_provider`` function: Anthropic Messages calls served on ``client``, a wrapped OpenAI one."""

    def serve(call: llmpulse.UnavailableCall) -> dict[str, Any] | None:
        body = call.body
        if call.provider != "anthropic" or not call.path.endswith("/messages") or body.get("tools"):
            return None
        messages: list[dict[str, str]] = []
        if "system" in body:
            messages.append({"role": "system", "content": _text(body["system"]) or ""})
        for message in body["messages"]:
            text = _text(message["content"])
            if text is None:
                return None  # images, documents, tool results: no faithful translation
            messages.append({"role": message["role"], "content": text})
        completion = client.chat.completions.create(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=body["max_tokens"],
        )
        choice, usage = completion.choices[0], completion.usage
        return {
            "id": f"msg_{completion.id}",
            "type": "message",
            "role": "assistant",
            "model": completion.model,
            "content": [{"type": "text", "text": choice.message.content or ""}],
            "stop_reason": _STOP_REASONS.get(choice.finish_reason, "end_turn"),
            "stop_sequence": None,
            "usage": {
                "input_tokens": usage.prompt_tokens if usage else 0,
                "output_tokens": usage.completion_tokens if usage else 0,
            },
        }

    return serve


def main() -> None:
    sink = CapturingSink()  # to print the events below; the default log sink writes them too
    openai_client = llmpulse.wrap(OpenAI(), sinks=[sink])
    policies = llmpulse.Policies(cross_provider=serve_on_openai(openai_client))
    claude = llmpulse.wrap(Anthropic(), sinks=[sink], policies=policies)

    with llmpulse.context(tenant="acme", route="/summarise"):
        message = claude.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=100,
            messages=[{"role": "user", "content": "Summarise ticket 42 in one line."}],
        )
    llmpulse.flush()
    asked = sink.calls[-1]
    print(f"reply: {message.content[0].text[:60]}...")  # type: ignore[union-attr]
    print(f"asked {asked.provider} {asked.model}, served by {asked.served_provider} {asked.served_model}")
    for event in sink.calls:
        cost = event.cost_usd or 0.0
        print(f"  {event.provider:9} outcome={event.outcome} attempts={event.attempts} cost=${cost:.6f}")


if __name__ == "__main__":
    main()
