"""The stream objects ``Policy.completion(stream=True)`` returns, and how they end.

A stream's ledger record and the settlement of its admissions (per-user limits) happen
when the stream ends, and a stream can end in five ways: read to its end, failed, closed
(``close()``/``aclose()``, a ``with`` block), cancelled, or simply dropped by a caller
that never read it, or stopped half way. A generator's ``finally`` covers only the first
four, and only once it has started; so these wrappers end through a
:func:`weakref.finalize`, which runs exactly once: when the stream ends, when it is
closed, or when it is garbage-collected unread. Dropped, a stream is recorded as
abandoned with what had reached the caller, and its upstream HTTP stream is closed.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

ABANDONED = "Abandoned: the caller closed the stream before its end"

log = logging.getLogger("evalgate.runtime")


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


class StreamEnd:
    """What ends one stream: ``finish(error)`` writes its record and settles it."""

    __slots__ = ("finish", "upstream")

    def __init__(self, finish: Callable[[str | None], None], upstream: Any = None) -> None:
        self.finish = finish
        self.upstream = upstream


def _abandon(end: StreamEnd) -> None:
    # Runs from close() or from the garbage collector (any thread, maybe at exit): it must
    # not raise, and it must not need the stream object, which may be gone.
    try:
        end.finish(ABANDONED)
    except Exception as exc:  # a finalizer has no caller to raise to
        log.warning("evalgate: recording an abandoned stream failed: %s", _describe(exc))
    close = getattr(end.upstream, "close", None)
    if callable(close):
        # Release the HTTP connection of a stream nobody will read (best effort: the
        # record is what matters).
        with contextlib.suppress(Exception):
            result = close()
            if hasattr(result, "close"):  # an async stream's close() may be a coroutine
                result.close()


class _Ending:
    """The once-only end shared by the sync and async streams."""

    def __init__(self, end: StreamEnd) -> None:
        self._end = end
        # Holds the end, never the stream: the stream can be collected, and then this runs.
        self._finalizer = weakref.finalize(self, _abandon, end)

    @property
    def ended(self) -> bool:
        return not self._finalizer.alive

    def _finish(self, error: str | None) -> None:
        if self._finalizer.detach() is not None:  # atomic: only one ending wins
            self._end.finish(error)

    def _close(self) -> None:
        self._finalizer()  # the abandoned ending, unless the stream has ended already


class PolicyStream(_Ending):
    """An iterator of litellm stream chunks under the policy (``close()`` to abandon it)."""

    def __init__(self, chunks: Iterator[Any], end: StreamEnd) -> None:
        super().__init__(end)
        self._chunks = chunks

    def __iter__(self) -> PolicyStream:
        return self

    def __next__(self) -> Any:
        if self.ended:
            raise StopIteration
        try:
            return next(self._chunks)
        except StopIteration:
            self._finish(None)
            raise
        except Exception as exc:
            self._finish(_describe(exc))
            raise
        except BaseException:  # KeyboardInterrupt, GeneratorExit: the caller went away
            self._close()
            raise

    def close(self) -> None:
        """Abandons the stream: its record is written now, its connection released."""
        self._close()
        close = getattr(self._chunks, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> PolicyStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncPolicyStream(_Ending):
    """An async iterator of litellm stream chunks (``await aclose()`` to abandon it)."""

    def __init__(self, chunks: AsyncIterator[Any], end: StreamEnd) -> None:
        super().__init__(end)
        self._chunks = chunks

    def __aiter__(self) -> AsyncPolicyStream:
        return self

    async def __anext__(self) -> Any:
        if self.ended:
            raise StopAsyncIteration
        try:
            return await anext(self._chunks)
        except StopAsyncIteration:
            self._finish(None)
            raise
        except Exception as exc:
            self._finish(_describe(exc))
            raise
        except BaseException:  # asyncio.CancelledError: the caller's task was cancelled
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Abandons the stream: its record is written now, its connection released."""
        if self._finalizer.detach() is None:
            return  # ended already
        self._end.finish(ABANDONED)
        for stream in (self._chunks, self._end.upstream):
            aclose = getattr(stream, "aclose", None)
            if callable(aclose):
                with contextlib.suppress(Exception):  # best effort: the record is written
                    await aclose()

    async def __aenter__(self) -> AsyncPolicyStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
