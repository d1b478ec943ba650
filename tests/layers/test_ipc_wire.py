"""The ipc:// layer's connection on bytes: frames split and joined across reads, as asyncio
hands them to a ``BufferedProtocol`` (no socket)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, cast

import msgpack
import pytest

from kanal.layers.ipc._wire import SEND, TAKEN, Link


class Transport:
    """The transport calls a Link makes on receiving."""

    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.aborted


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def receiving(loop: asyncio.AbstractEventLoop) -> tuple[Link, list[list[Any]], Transport]:
    frames: list[list[Any]] = []
    link = Link(loop, "0123456789ab", lambda _, frame: frames.append(frame), lambda *_: None)
    transport = Transport()
    link.connection_made(cast(asyncio.Transport, transport))
    return link, frames, transport


def read(link: Link, data: bytes, at_most: int | None = None) -> None:
    """What asyncio does with ``data`` arriving: reads into the link's buffer, each at most
    as large as the buffer (or ``at_most``)."""
    while data:
        buffer = link.get_buffer(-1)
        size = min(len(buffer), len(data), at_most or len(data))
        buffer[:size] = data[:size]
        link.buffer_updated(size)
        data = data[size:]


def test_a_frame_split_over_reads_and_frames_joined_in_one(
    loop: asyncio.AbstractEventLoop,
) -> None:
    link, frames, _ = receiving(loop)
    small = [SEND, "specific.0123456789ab!1", 12.5, b"message"]
    large = [SEND, "jobs", 13.5, b"x" * (600 * 1024)]  # larger than the read buffer
    stream = b"".join(msgpack.packb(frame) for frame in (small, large, small, [TAKEN, "a", 3]))
    read(link, stream[:7])
    assert frames == []  # half a frame: nothing yet
    read(link, stream[7:])
    assert frames == [small, large, small, [TAKEN, "a", 3]]


def test_frames_read_a_byte_at_a_time(loop: asyncio.AbstractEventLoop) -> None:
    link, frames, _ = receiving(loop)
    frame = [SEND, "specific.0123456789ab!1", 12.5, b"message"]
    read(link, msgpack.packb(frame) * 2, at_most=1)
    assert frames == [frame, frame]


def test_a_bad_frame_ends_the_connection(loop: asyncio.AbstractEventLoop) -> None:
    link, frames, transport = receiving(loop)
    read(link, b"\xc1")  # a byte msgpack never uses
    assert transport.aborted
    assert frames == []
