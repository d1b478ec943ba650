"""kanal's pytest plugin, run inside a separate pytest session."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def test_channel_layer_fixture_is_fresh_and_closed_after_the_test(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the two plugins under test: the others installed here make the run slow.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(
        """
        LAYERS = []

        async def test_first(channel_layer):
            await channel_layer.send("queue", {"type": "kept"})
            LAYERS.append(channel_layer)

        async def test_second(channel_layer):
            assert LAYERS[0].closed
            assert channel_layer is not LAYERS[0] and not channel_layer.closed
        """
    )
    result = pytester.runpytest_inprocess(
        "-p",
        "kanal.testing.pytest_plugin",
        "-p",
        "pytest_asyncio.plugin",
        "-p",
        "no:cacheprovider",
        "-o",
        "asyncio_mode=auto",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
    )
    result.assert_outcomes(passed=2)
