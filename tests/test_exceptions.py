"""The error tree: every error is a KanalError, drawn in the module docstring."""

from __future__ import annotations

import kanal
import kanal.exceptions


def test_every_error_is_a_kanal_error() -> None:
    for name in kanal.exceptions.__all__:
        error = getattr(kanal.exceptions, name)
        assert issubclass(error, kanal.KanalError), name
        assert name in kanal.exceptions.__doc__, f"{name} is missing from the error tree drawing"


def test_errors_are_also_the_matching_builtins() -> None:
    from kanal.exceptions import InvalidName, LayerUnavailable, MissingDependency, ReceiveTimeout

    assert issubclass(InvalidName, TypeError)  # what Channels raises for a bad name
    assert issubclass(ReceiveTimeout, TimeoutError)
    assert issubclass(LayerUnavailable, ConnectionError)
    # Code that guards an optional import with `except ImportError` keeps working.
    assert issubclass(MissingDependency, ModuleNotFoundError)
    error = MissingDependency("needs kanal[redis]", extra="redis", name="redis")
    assert (error.extra, error.name, str(error)) == ("redis", "redis", "needs kanal[redis]")
