"""Frames built once for many connections parse as the RFC says, at every length boundary."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from kanal.protocols import message_frame


def parse(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("the frame was incomplete")


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_text_and_binary_frames_of_every_length_form(size: int) -> None:
    text = parse(message_frame("é" * (size // 2) + "a" * (size % 2)))
    assert text.opcode is Opcode.TEXT and text.fin and not text.rsv1
    assert text.data.decode() == "é" * (size // 2) + "a" * (size % 2)
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    binary = parse(message_frame(data))
    assert binary.opcode is Opcode.BINARY and binary.fin and not binary.rsv1
    assert binary.data == data
