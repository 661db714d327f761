"""litellm's response types built from a cached answer (a hit looks like a fresh call)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from evalgate.litellm_import import litellm_module
from evalgate.runtime.cache import CachedAnswer

REPLAY_CHUNKS = 16
"""At most this many content chunks when a hit is replayed as a stream."""


def _usage(answer: CachedAnswer) -> Any:
    from litellm.types.utils import Usage

    tokens_in, tokens_out = answer.tokens_in or 0, answer.tokens_out or 0
    return Usage(
        prompt_tokens=tokens_in, completion_tokens=tokens_out, total_tokens=tokens_in + tokens_out
    )


def _mark(response: Any, info: dict[str, Any]) -> Any:
    hidden = getattr(response, "_hidden_params", None)
    if isinstance(hidden, dict):
        hidden["evalgate"] = info
        hidden["cache_hit"] = info.get("cached", False)
    return response


def response_from_answer(answer: CachedAnswer, info: dict[str, Any]) -> Any:
    """A ``litellm.ModelResponse`` carrying the cached answer and its original usage."""
    litellm = litellm_module()
    response = litellm.ModelResponse(
        id=f"chatcmpl-evalgate-{uuid.uuid4().hex}",
        model=answer.model,
        choices=[
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.content},
                "finish_reason": answer.finish_reason or "stop",
            }
        ],
        usage=_usage(answer),
    )
    return _mark(response, info)


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    size = max(1, -(-len(words) // REPLAY_CHUNKS))
    pieces = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [p + (" " if i < len(pieces) - 1 else "") for i, p in enumerate(pieces)] or [""]


def replay_chunks(answer: CachedAnswer, info: dict[str, Any]) -> Iterator[Any]:
    """``litellm`` stream chunks replaying a cached answer: content, then the final chunk
    with the finish reason and the usage (as a stream with ``include_usage`` ends)."""
    litellm_module()
    from litellm.types.utils import Delta, ModelResponseStream, StreamingChoices

    ident = f"chatcmpl-evalgate-{uuid.uuid4().hex}"
    for i, piece in enumerate(_pieces(answer.content)):
        delta = Delta(content=piece, role="assistant" if i == 0 else None)
        chunk = ModelResponseStream(
            id=ident, model=answer.model, choices=[StreamingChoices(index=0, delta=delta)]
        )
        yield _mark(chunk, info)
    last = ModelResponseStream(
        id=ident,
        model=answer.model,
        choices=[
            StreamingChoices(index=0, delta=Delta(), finish_reason=answer.finish_reason or "stop")
        ],
        usage=_usage(answer),
    )
    yield _mark(last, info)
