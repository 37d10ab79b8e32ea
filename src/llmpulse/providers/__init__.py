"""③ Provider adapters: the only code that knows the OpenAI and Anthropic wire formats."""

from ._anthropic import AnthropicProvider
from ._base import Provider, RequestInfo, ResponseInfo, StreamFormat, operation_from_path
from ._openai import OpenAIProvider, UsageChunkFilter

__all__ = [
    "AnthropicProvider",
    "OpenAIProvider",
    "Provider",
    "RequestInfo",
    "ResponseInfo",
    "StreamFormat",
    "UsageChunkFilter",
    "operation_from_path",
]
