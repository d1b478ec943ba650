"""Where a Channels user's code can tell kanal's layer from Channels' own: it must not.

(That Channels' consumers run on every backend is checked once, in the conformance suite.)
"""

from __future__ import annotations

import pytest


async def test_channels_full_catches_kanals() -> None:
    import channels.exceptions

    import kanal.layers

    layer = kanal.layers.InMemoryChannelLayer(capacity=1, max_message_size=1024)
    await layer.send("jobs", {"type": "a"})
    with pytest.raises(channels.exceptions.ChannelFull) as caught:
        await layer.send("jobs", {"type": "b"})
    assert isinstance(caught.value, kanal.layers.ChannelFull)  # still kanal's, and a LayerError
    with pytest.raises(channels.exceptions.MessageTooLarge):
        await layer.send("jobs", {"type": "big", "data": b"x" * 2048})
    await layer.close()


def test_channels_43_validator_names_on_the_layer() -> None:
    import kanal.layers

    layer = kanal.layers.InMemoryChannelLayer()
    assert layer.require_valid_channel_name("specific.abc!def") is True
    assert layer.require_valid_group_name("room.lobby") is True
    with pytest.raises(TypeError):
        layer.require_valid_channel_name("no spaces")
    with pytest.raises(TypeError):
        layer.require_valid_group_name("no!bang")
