"""Scripted replies of the fake provider: a fixed text, tool calls, a JSON object, chosen per request.

Without a script the fake generates its reply from the request (`_fake_formats.Generation`);
a script lets a test drive the paths that need a particular answer, such as a framework's
tool loop or its structured output, in both APIs' wire formats, streamed or not.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._fake_provider import RecordedRequest

__all__ = ["Reply", "ReplyScript", "ToolCall"]

# Arguments are streamed (and counted) in pieces of about one token, as structured output is.
_ARGUMENT_PIECE = 4


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call of a scripted reply.

    Attributes:
        name: The tool (function) name.
        arguments: Its arguments, sent JSON-encoded (OpenAI) or as the ``input`` object (Anthropic).
        id: The call id; by default derived from the name, arguments and position, so the same
            script gives the same ids on every run (a bare and a wrapped run compare equal).
    """

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None

    @property
    def arguments_json(self) -> str:
        """The arguments as the OpenAI APIs send them: a JSON string."""
        return json.dumps(self.arguments, separators=(",", ":"))

    def call_id(self, index: int, prefix: str) -> str:
        """The id of this call at ``index`` in its reply: `id`, or a stable one after ``prefix``."""
        if self.id is not None:
            return self.id
        digest = hashlib.sha256(f"{index}:{self.name}:{self.arguments_json}".encode()).hexdigest()
        return f"{prefix}{digest[:24]}"

    def argument_pieces(self) -> tuple[str, ...]:
        """The JSON arguments as streamed, one piece per delta event (and per output token)."""
        text = self.arguments_json
        return tuple(text[i : i + _ARGUMENT_PIECE] for i in range(0, len(text), _ARGUMENT_PIECE))


@dataclass(frozen=True, slots=True)
class Reply:
    """A scripted answer to one request; build it with the class methods.

    Output tokens are one per whitespace-separated word of the text plus one per argument
    piece of each tool call; the request's max-tokens limit does not cut a scripted reply.

    Attributes:
        text: The reply's text (may be empty when it calls tools).
        tool_calls: Tool calls after the text (OpenAI ``tool_calls`` / ``function_call`` items,
            Anthropic ``tool_use`` blocks); any makes the stop reason ``tool_calls`` / ``tool_use``.
    """

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()

    @classmethod
    def message(cls, text: str) -> Reply:
        """A plain text answer."""
        return cls(text=text)

    @classmethod
    def json(cls, value: Any) -> Reply:
        """A text answer that is ``value`` JSON-encoded (structured output, JSON mode)."""
        return cls(text=json.dumps(value))

    @classmethod
    def tool_call(cls, name: str, arguments: Mapping[str, Any] | None = None, *, text: str = "") -> Reply:
        """An answer that calls one tool, after an optional text."""
        return cls(text=text, tool_calls=(ToolCall(name, dict(arguments or {})),))

    @classmethod
    def tools(cls, *calls: ToolCall, text: str = "") -> Reply:
        """An answer that calls several tools (parallel tool calls), after an optional text."""
        return cls(text=text, tool_calls=calls)

    @property
    def output_tokens(self) -> int:
        """The output tokens the fake reports for this reply (before any plan's reasoning tokens)."""
        return len(self.text_pieces()) + sum(len(call.argument_pieces()) for call in self.tool_calls)

    def text_pieces(self) -> tuple[str, ...]:
        """The text as streamed: one piece per word, each with the whitespace before it."""
        return tuple(re.findall(r"\s*\S+", self.text))


ReplyScript = Callable[["RecordedRequest"], Reply | None]
"""Picks the reply to a request (see `FakeProvider.replies`); None lets the fake generate one."""
