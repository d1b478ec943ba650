"""The MQTT interface server's settings, as one typed object with a loader from the CLI."""

from __future__ import annotations

import argparse
import os
import socket
import uuid
from dataclasses import dataclass, field, fields
from urllib.parse import unquote, urlsplit

from kanal.exceptions import ConfigError

__all__ = ["MqttConfig"]

_SCHEMES = {"mqtt": (False, 1883), "mqtts": (True, 8883)}
_VERSIONS = ("3.1.1", "5")


@dataclass
class MqttConfig:
    """Everything ``kanal mqtt`` needs to reach a broker and run an application.

    ``broker`` is ``mqtt://[user[:password]@]host[:port]`` (``mqtts://`` for TLS, port 8883
    by default); ``username``/``password`` given apart win over the URL's.
    """

    broker: str = "mqtt://127.0.0.1:1883"
    #: The client identifier; ``None`` makes one up (clean sessions only: a persistent
    #: session is found again by its identifier, so it must be given).
    client_id: str | None = None
    #: ``"5"`` or ``"3.1.1"``.
    mqtt_version: str = "5"
    #: ``True``: the broker forgets the session on disconnect. ``False``: it keeps the
    #: subscriptions and queues QoS 1/2 messages while this client is away.
    clean_session: bool = True
    #: MQTT 5, persistent sessions: seconds the broker keeps the session after a
    #: disconnect. A day covers a redeploy or a night's outage; the broker may cap it.
    session_expiry: int = 86_400
    #: Seconds between keepalive pings; a dead connection is noticed after 1.5 times this.
    #: 30 s instead of the usual 60 s: a broker restart through a NAT or proxy that keeps
    #: the TCP connection open then costs at most 45 s.
    keepalive: int = 30
    username: str | None = None
    password: str | None = None
    #: TLS: CA bundle to verify the broker with (``None``: the system's), client certificate
    #: and key for mutual TLS, and ``tls_insecure`` to skip the host name check.
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_insecure: bool = False
    #: QoS 1/2 messages the broker may send before the application acknowledged them
    #: (MQTT 5's Receive Maximum; an MQTT 3.1.1 broker applies its own, 20 in Mosquitto).
    #: It bounds the work in progress and is how a slow application holds the broker back.
    receive_maximum: int = 100
    #: QoS 0 messages waiting for the application; past this they are dropped and counted
    #: (QoS 0 has no acknowledgement to hold the broker back with).
    max_queued_qos0: int = 1000
    #: Publishes of the application waiting for the broker at once (a send waits for room).
    max_pending_publishes: int = 1000
    #: Reconnect backoff: the first wait, doubled after each failure up to the second.
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    #: Seconds the application has at shutdown to finish the messages it holds.
    shutdown_timeout: float = 10.0
    #: Extra keys for the application's scope.
    scope: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mqtt_version not in _VERSIONS:
            raise ConfigError(f"mqtt_version must be one of {_VERSIONS}, not {self.mqtt_version!r}")
        self.endpoint()  # validates the URL
        if not self.clean_session and not self.client_id:
            raise ConfigError(
                "a persistent session (clean_session=False) needs a client_id: the broker "
                "finds the session again by it"
            )
        for name in ("receive_maximum", "max_queued_qos0", "max_pending_publishes"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, not {value}")
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise ConfigError("reconnect backoff needs 0 < reconnect_min <= reconnect_max")
        if self.receive_maximum > 65_535:  # a two-byte field in CONNECT
            raise ConfigError("receive_maximum is at most 65535")

    def endpoint(self) -> tuple[str, int, bool]:
        """``(host, port, tls)`` from :attr:`broker`."""
        parts = urlsplit(self.broker)
        if parts.scheme not in _SCHEMES:
            raise ConfigError(f"broker URL {self.broker!r} must start with mqtt:// or mqtts://")
        tls, default_port = _SCHEMES[parts.scheme]
        if not parts.hostname:
            raise ConfigError(f"broker URL {self.broker!r} has no host")
        try:
            port = parts.port or default_port
        except ValueError as exc:
            raise ConfigError(f"broker URL {self.broker!r}: {exc}") from None
        return parts.hostname, port, tls

    def credentials(self) -> tuple[str | None, str | None]:
        """``(username, password)``: the options, else the URL's user part."""
        parts = urlsplit(self.broker)
        username = self.username or (unquote(parts.username) if parts.username else None)
        password = self.password or (unquote(parts.password) if parts.password else None)
        return username, password

    def identifier(self) -> str:
        """:attr:`client_id`, or a new one naming this host and process."""
        if self.client_id:
            return self.client_id
        return f"kanal-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> MqttConfig:
        """The options ``kanal mqtt`` parsed; those not given keep their defaults."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in vars(args).items() if k in known and v is not None}
        if values.get("password") is None and os.environ.get("KANAL_MQTT_PASSWORD"):
            # A password on the command line is visible to every user of the machine.
            values["password"] = os.environ["KANAL_MQTT_PASSWORD"]
        return cls(**values)
