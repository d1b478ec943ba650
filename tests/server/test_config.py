"""The server's Config, its loaders, app loading, and the public names of the packages."""

from __future__ import annotations

import inspect

import pytest
from tests.server import apps

import kanal.protocols
import kanal.server
from kanal.exceptions import AppLoadError, ConfigError
from kanal.protocols import HTTPLimits
from kanal.server import Config, load_app
from kanal.server._config import import_string


def test_from_mapping_takes_fields_and_flat_limits() -> None:
    config = Config.from_mapping(
        {"app": "tests.server.apps:hello", "port": 0, "max-body-size": 10, "access_log": True}
    )
    assert (config.port, config.access_log) == (0, True)
    assert config.limits == HTTPLimits(max_body_size=10)
    budgets = Config.from_mapping({"app": "x:y", "ws-max-queue": 32, "ws_max_pending_bytes": 1})
    assert (budgets.ws_max_queue, budgets.ws_max_pending_bytes) == (32, 1)


def test_from_mapping_rejects_unknown_keys_by_name() -> None:
    with pytest.raises(ConfigError, match="'colour'"):
        Config.from_mapping({"app": "x:y", "colour": "blue"})
    with pytest.raises(ConfigError, match="'max_bananas'"):
        Config.from_mapping({"app": "x:y", "limits": {"max_bananas": 1}})
    with pytest.raises(ConfigError, match="needs 'app'"):
        Config.from_mapping({"port": 1})


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"port": -1}, "-1"),
        ({"workers": 0}, "workers"),
        ({"log_level": "loud"}, "'loud'"),
        ({"timeout_keep_alive": 0}, "timeout_keep_alive"),
        ({"ssl_certfile": "cert.pem"}, "ssl_keyfile"),
        ({"limit_concurrency": 0}, "limit_concurrency"),
        ({"ws_ping_timeout": 0}, "ws_ping_timeout"),
        ({"lifespan": "maybe"}, "'maybe'"),
        ({"ws_max_pending_bytes": 0}, "ws_max_pending_bytes"),
        ({"ws_max_queue": -1}, "ws_max_queue"),
        ({"write_buffer_limit": 1.5}, "write_buffer_limit"),
        ({"read_buffer_limit": True}, "read_buffer_limit"),
    ],
)
def test_bad_values_name_themselves(options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Config(app=apps.hello, **options)  # type: ignore[arg-type]


def test_root_path_loses_its_trailing_slash() -> None:
    assert Config(app=apps.hello, root_path="/api/").root_path == "/api"


def test_a_ping_interval_of_zero_or_less_means_no_pings() -> None:
    assert Config(app=apps.hello, ws_ping_interval=0).ws_ping_interval is None
    assert Config.from_mapping({"app": "x:y", "ws_ping_interval": -5}).ws_ping_interval is None
    assert Config(app=apps.hello, ws_ping_interval=0.5).ws_ping_interval == 0.5


def test_load_app_forms() -> None:
    assert load_app("tests.server.apps:hello") is apps.hello
    assert load_app("tests.server.apps:make_app()") is apps.hello
    assert load_app(apps.hello) is apps.hello
    with pytest.raises(AppLoadError, match="module:attr"):
        load_app("no-colon")
    with pytest.raises(AppLoadError, match="no attribute 'nothing'"):
        load_app("tests.server.apps:nothing")
    with pytest.raises(AppLoadError, match="not an ASGI application"):
        load_app("tests.server.apps:__name__")


def test_import_string_forms() -> None:
    assert import_string("tests.server.apps:hello") is apps.hello
    assert import_string("tests.server.apps:make_app()") is apps.hello
    assert import_string("tests.server.apps:hello.__name__") == "hello"
    # A default attribute lets the module alone, or with an empty attribute, name it.
    assert import_string("tests.server.apps", default_attr="hello") is apps.hello
    assert import_string("tests.server.apps:", default_attr="hello") is apps.hello
    with pytest.raises(AppLoadError, match="module:attr"):
        import_string("tests.server.apps")
    with pytest.raises(AppLoadError, match=r"cannot import module 'tests\.nothing_here'"):
        import_string("tests.nothing_here", default_attr="jobs")


@pytest.mark.parametrize("package", [kanal.server, kanal.protocols])
def test_public_names_resolve_and_are_documented(package: object) -> None:
    names = package.__all__  # type: ignore[attr-defined]
    for name in names:
        obj = getattr(package, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"{package.__name__}.{name} has no docstring"  # type: ignore[attr-defined]
