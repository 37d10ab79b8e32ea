"""The llmpulse test kit: a capturing sink and a fake OpenAI/Anthropic provider.

from llmpulse.testing import CapturingSink, FakeProvider, Fault

with FakeProvider() as fake:
    sink = CapturingSink()
    client = llmpulse.wrap(OpenAI(base_url=fake.openai_base_url, api_key="x"), sinks=[sink])
    fake.enqueue(Fault.status(500))
    client.chat.completions.create(...)
    assert sink.calls[0].attempts == 2
"""

from ._capture import CapturingSink
from ._clock import FakeClock
from ._events import make_call_event
from ._fake_provider import FakeProvider, FakeStats, Fault, FaultPlan, RecordedRequest
from ._fake_replies import Reply, ReplyScript, ToolCall
from ._reset import reset

__all__ = [
    "CapturingSink",
    "FakeClock",
    "FakeProvider",
    "FakeStats",
    "Fault",
    "FaultPlan",
    "RecordedRequest",
    "Reply",
    "ReplyScript",
    "ToolCall",
    "make_call_event",
    "reset",
]
