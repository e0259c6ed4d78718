"""The API client: chat (streamed and not), responses, images, embeddings, typed errors, retry.

Knows nothing of Discord or the database.
"""

from bot.ai.client import ApiClient, ChatStream, ResponseStream
from bot.ai.errors import (
    ApiError,
    ApiTimeout,
    BadRequest,
    ContentRefused,
    CreditsExhausted,
    ImageTooLarge,
    InvalidToken,
    RateLimited,
    RequestTooLarge,
    ServiceUnavailable,
    error_from_response,
)
from bot.ai.retry import NO_RETRY, RetryPolicy, with_retry
from bot.ai.sse import SseDecoder, iter_sse_data
from bot.ai.types import (
    ChatResult,
    Delta,
    EmbeddingResult,
    GeneratedImage,
    ImageFile,
    ImageResult,
    Message,
    TextStream,
    Timeouts,
    Usage,
)

__all__ = [
    "NO_RETRY",
    "ApiClient",
    "ApiError",
    "ApiTimeout",
    "BadRequest",
    "ChatResult",
    "ChatStream",
    "ContentRefused",
    "CreditsExhausted",
    "Delta",
    "EmbeddingResult",
    "GeneratedImage",
    "ImageFile",
    "ImageResult",
    "ImageTooLarge",
    "InvalidToken",
    "Message",
    "RateLimited",
    "RequestTooLarge",
    "ResponseStream",
    "RetryPolicy",
    "ServiceUnavailable",
    "SseDecoder",
    "TextStream",
    "Timeouts",
    "Usage",
    "error_from_response",
    "iter_sse_data",
    "with_retry",
]
