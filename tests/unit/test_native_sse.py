"""The server-sent-events decoder of the native transport, fed the way networks deliver."""

from __future__ import annotations

import pytest

from evalgate.engine.sse import SSEDecoder

STREAM = (
    b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n'
    b": keep-alive comment\n\n"
    b'data: {"choices":[{"delta":{"content":"lo"}}]}\n\n'
    b"event: ping\nid: 7\nretry: 100\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    b'{"choices":[{"delta":{"content":"Hel"}}]}',
    b'{"choices":[{"delta":{"content":"lo"}}]}',
    b"[DONE]",
]


def feed_all(pieces: list[bytes]) -> list[bytes]:
    decoder = SSEDecoder()
    events: list[bytes] = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events + decoder.close()


def test_whole_stream_in_one_piece() -> None:
    assert feed_all([STREAM]) == EXPECTED


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"])
def test_crlf_and_cr_line_ends(newline: bytes) -> None:
    assert feed_all([STREAM.replace(b"\n", newline)]) == EXPECTED


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_every_split_point_gives_the_same_events(newline: bytes) -> None:
    stream = STREAM.replace(b"\n", newline)
    for cut in range(len(stream) + 1):
        assert feed_all([stream[:cut], stream[cut:]]) == EXPECTED, cut


def test_byte_by_byte() -> None:
    stream = STREAM.replace(b"\n", b"\r\n")
    assert feed_all([stream[i : i + 1] for i in range(len(stream))]) == EXPECTED


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert feed_all([b"data: first\ndata:second\ndata:  third\n\n"]) == [b"first\nsecond\n third"]


def test_unterminated_last_event_is_still_delivered_at_close() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: [DONE]") == []
    assert decoder.close() == [b"[DONE]"]
    assert decoder.close() == []


def test_blank_lines_without_data_dispatch_nothing() -> None:
    assert feed_all([b"\n\n\r\n: only a comment\n\n"]) == []
