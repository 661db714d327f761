"""An incremental decoder for ``text/event-stream`` bodies (server-sent events).

It follows the WHATWG rules a chat-completions stream needs: lines end in ``\\n``,
``\\r\\n`` or ``\\r``; a blank line ends an event; ``data:`` lines of one event are joined
with ``\\n``; comments (``:...``) and other fields (``event:``, ``id:``, ``retry:``) are
ignored, since the OpenAI protocol carries everything in ``data``. Bytes arrive in
whatever pieces the network delivers, so a line, or a ``\\r\\n`` pair, may be split
across two :meth:`SSEDecoder.feed` calls.
"""

from __future__ import annotations


class SSEDecoder:
    """Feed it bytes; it returns the ``data`` payload of each event completed so far."""

    __slots__ = ("_data", "_pending")

    def __init__(self) -> None:
        self._pending = b""  # an unfinished last line
        self._data: list[bytes] = []  # data lines of the event being read

    def feed(self, chunk: bytes) -> list[bytes]:
        """The data payloads of the events that ``chunk`` completes, in order."""
        buffer = self._pending + chunk if self._pending else chunk
        lines = buffer.splitlines(keepends=True)  # bytes: splits on \n, \r\n and \r only
        # A last line without its end is kept for the next chunk; so is one ending in a
        # lone \r, whose \n may be the first byte of the next chunk.
        if lines and (not lines[-1].endswith((b"\n", b"\r")) or lines[-1].endswith(b"\r")):
            self._pending = lines.pop()
        else:
            self._pending = b""
        events: list[bytes] = []
        data = self._data
        for raw in lines:
            line = raw.rstrip(b"\r\n")
            if not line:
                if data:
                    events.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data.clear()
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
            # comments and other fields carry nothing the protocol uses
        return events

    def close(self) -> list[bytes]:
        """Ends the stream: an event not closed by a blank line is still dispatched."""
        events = self.feed(b"\n\n") if self._pending or self._data else []
        self._pending = b""
        return events
