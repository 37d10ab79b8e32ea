"""③ Provider adapters: the only code that knows the OpenAI and Anthropic wire formats."""

from ._anthropic import AnthropicProvider
from ._base import Provider, RequestInfo, ResponseInfo, operation_from_path
from ._openai import OpenAIProvider
from ._sse import StreamWatch

__all__ = [
    "AnthropicProvider",
    "OpenAIProvider",
    "Provider",
    "RequestInfo",
    "ResponseInfo",
    "StreamWatch",
    "operation_from_path",
]
