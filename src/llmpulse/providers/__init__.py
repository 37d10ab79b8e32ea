"""③ Provider adapters: the only code that knows the OpenAI and Anthropic wire formats."""

from ._anthropic import AnthropicProvider, BedrockProvider, VertexProvider
from ._base import Provider, RequestInfo, ResponseInfo, is_stream, operation_from_path
from ._openai import OpenAIProvider
from ._sse import StreamWatch

__all__ = [
    "AnthropicProvider",
    "BedrockProvider",
    "OpenAIProvider",
    "Provider",
    "RequestInfo",
    "ResponseInfo",
    "StreamWatch",
    "VertexProvider",
    "is_stream",
    "operation_from_path",
]
