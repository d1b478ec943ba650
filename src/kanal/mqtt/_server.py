"""The MQTT interface server: one broker connection, one application instance behind it.

The application sees a scope of type ``mqtt`` and the events of :mod:`kanal.mqtt._events`.
The connection to the broker comes and goes; the application does not: the server
reconnects with backoff, subscribes again to what the broker forgot, sends publishes that
were waiting, and acknowledges QoS 1/2 messages only once the application has handled
them, so a broker restart loses nothing that a persistent session holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from dataclasses import dataclass

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kanal._backoff import Backoff
from kanal.exceptions import MqttError
from kanal.mqtt._client import BrokerClient
from kanal.mqtt._config import MqttConfig
from kanal.mqtt._events import Subscribe, message_event, parse_publish, parse_subscribe
from kanal.mqtt._events import require_topic as _require_topic
from kanal.typing import ASGIApp, Message, Scope

__all__ = ["MqttServer", "MqttStats"]

logger = logging.getLogger("kanal.mqtt")


@dataclass
class MqttStats:
    """What the server counted since it started."""

    #: Messages handed to the application.
    delivered: int = 0
    #: QoS 1/2 messages acknowledged to the broker after the application handled them.
    acked: int = 0
    #: QoS 0 messages dropped because ``max_queued_qos0`` were already waiting.
    dropped_qos0: int = 0
    #: Publishes the broker accepted.
    published: int = 0
    #: Connections to the broker lost and made again.
    reconnects: int = 0


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the TLS handshake fails.

    paho leaves the socket of a failed handshake (an untrusted certificate) open, and a
    server that retries every few seconds would leak one per attempt.
    """

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


class MqttServer:
    """Run ``application`` for the broker that ``config`` names, until :meth:`stop`.

    ::

        server = MqttServer(application, MqttConfig(broker="mqtt://127.0.0.1:1883"))
        await server.run()      # returns after stop(), once the application ended
    """

    def __init__(self, application: ASGIApp, config: MqttConfig | None = None) -> None:
        self.application = application
        self.config = config or MqttConfig()
        self.stats = MqttStats()
        self.client_id = self.config.identifier()
        self._host, self._port, self._tls = self.config.endpoint()
        self._mqtt5 = self.config.mqtt_version == "5"
        self._inbox: deque[Message] = deque()
        self._queued_qos0 = 0
        # ack id -> (connection generation, packet id, qos) of a delivered QoS 1/2 message
        self._unacked: dict[int, tuple[int, int, int]] = {}
        self._next_id = 0
        # The ack ids of QoS 1/2 messages the application has and has not acknowledged.
        self._in_progress: set[int] = set()
        # Packet ids of QoS 2 messages handled after the connection they came on broke:
        # their PUBCOMP is owed to the session, on the next connection (see _ack).
        self._pubcomp_due: set[int] = set()
        self._connections = 0  # connections made, each counted once subscribed
        self._generation = 0
        self._subscriptions: dict[str, Subscribe] = {}
        # Changes the broker has not confirmed on the current session yet.
        self._unsent: set[str] = set()
        self._unsent_unsubscribes: set[str] = set()
        self._client: BrokerClient | None = None
        # (Events and semaphores bind to a loop only when first waited on.)
        self._changed = asyncio.Event()  # the inbox or the acknowledgements changed
        self._connected = asyncio.Event()
        self._connection_made = asyncio.Event()
        self._subscribed = asyncio.Event()  # the broker confirmed a subscription
        self._stopping = asyncio.Event()
        self._publish_slots = asyncio.Semaphore(self.config.max_pending_publishes)
        self._closing = False  # no more broker messages for the application
        self._disconnect_due = False  # the application's next receive() is mqtt.disconnect
        self._first_connect = True

    # -- the public surface ------------------------------------------------------------------

    @property
    def scope(self) -> Scope:
        """The scope the application is called with."""
        return {
            "type": "mqtt",
            "asgi": {"version": "3.0", "spec_version": "1.0"},
            "broker": (self._host, self._port),
            "tls": self._tls,
            "client_id": self.client_id,
            "mqtt_version": self.config.mqtt_version,
            "clean_session": self.config.clean_session,
            **self.config.scope,
        }

    async def wait_connected(self) -> None:
        """Wait until the server is connected to the broker (now, or after a reconnection)."""
        await self._connected.wait()

    async def wait_subscribed(self, topic: str) -> None:
        """Wait until the broker confirmed the application's subscription to ``topic``
        on the current connection."""
        while topic not in self._subscriptions or topic in self._unsent or not self.connected:
            self._subscribed.clear()
            await self._subscribed.wait()

    async def wait_connections(self, count: int) -> None:
        """Wait until the server has connected ``count`` times in all (1: the first time),
        each time with its subscriptions sent."""
        while self._connections < count:
            self._connection_made.clear()
            await self._connection_made.wait()

    @property
    def connected(self) -> bool:
        """True while connected to the broker."""
        return self._connected.is_set()

    def stop(self) -> None:
        """Begin a graceful shutdown (safe to call from a signal handler)."""
        self._stopping.set()

    async def run(self) -> None:
        """Connect, run the application and keep the connection up until :meth:`stop`.

        Raises :class:`~kanal.exceptions.MqttError` if the application ended by itself.
        """
        self._client = self._make_client()
        app = asyncio.create_task(self._run_application(), name="kanal-mqtt-application")
        link = asyncio.create_task(self._keep_connected(), name="kanal-mqtt-connection")
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            done, _ = await asyncio.wait({app, link, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if app in done:
                self._stopping.set()
                link.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await link
                await self._client.disconnect()
                error = app.exception()
                raise MqttError(
                    "the MQTT application ended by itself"
                    + (
                        f": {error!r}"
                        if error is not None
                        else " (it should run until mqtt.disconnect)"
                    )
                ) from error
            if link in done:
                link.result()  # a bug in the connection loop: let it show
            await self._shutdown(app, link)
        finally:
            stopping.cancel()
            for task in (app, link):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    # -- the broker connection ---------------------------------------------------------------

    def _make_client(self) -> BrokerClient:
        config = self.config
        username, password = config.credentials()
        properties = None
        if self._mqtt5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.ReceiveMaximum = config.receive_maximum
            properties.SessionExpiryInterval = 0 if config.clean_session else config.session_expiry
        tls_context = None
        if self._tls:
            tls_context = ssl.create_default_context(cafile=config.tls_ca)
            tls_context.sslsocket_class = _ClosingSSLSocket
            if config.tls_cert:
                tls_context.load_cert_chain(config.tls_cert, config.tls_key)
            if config.tls_insecure:
                tls_context.check_hostname = False
        return BrokerClient(
            self._host,
            self._port,
            on_message=self._on_broker_message,
            username=username,
            password=password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if self._mqtt5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if self._mqtt5 else config.clean_session,
            # MQTT 5: start clean only for a clean session; a persistent one is resumed
            # even on the process's first connection (a restarted process finds it again).
            clean_start=config.clean_session if self._mqtt5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
            keepalive=config.keepalive,
            properties=properties,
            tls_context=tls_context,
            tls_insecure=config.tls_insecure if self._tls else None,
            # paho's own limit on QoS 1/2 publishes in flight; more wait in paho's queue.
            max_inflight_messages=config.receive_maximum,
            logger=logging.getLogger("kanal.mqtt.client"),
        )

    async def _keep_connected(self) -> None:
        assert self._client is not None
        client = self._client
        # Jitter, so that many bridges that lost one broker do not all come back at once.
        backoff = Backoff(self.config.reconnect_min, self.config.reconnect_max, jitter=0.5)
        while not self._stopping.is_set():
            try:
                await client.connect()
            except aiomqtt.MqttError as exc:
                wait = backoff.next()
                logger.warning(
                    "cannot connect to the MQTT broker %s:%s (%s); retrying in %.1f s",
                    self._host,
                    self._port,
                    exc,
                    wait,
                )
                client.release()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._stopping.wait()
                continue
            backoff.reset()
            self._generation += 1
            if not client.session_present:
                # The broker has no subscription of ours (a clean session, or one it lost).
                self._unsent = set(self._subscriptions)
                self._unsent_unsubscribes.clear()
            if self._first_connect:
                self._first_connect = False
                logger.info(
                    "connected to the MQTT broker %s:%s as %r (MQTT %s, %s session)",
                    self._host,
                    self._port,
                    self.client_id,
                    self.config.mqtt_version,
                    "clean" if self.config.clean_session else "persistent",
                )
                self._deliver({"type": "mqtt.connect", "session_present": client.session_present})
            else:
                self.stats.reconnects += 1
                logger.info(
                    "reconnected to the MQTT broker %s:%s (session %s)",
                    self._host,
                    self._port,
                    "kept" if client.session_present else "new: subscribing again",
                )
            self._connected.set()
            self._send_due_pubcomps()
            await self._send_subscriptions()
            self._connections += 1
            self._connection_made.set()
            error = await client.wait_disconnected()
            self._connected.clear()
            client.release()
            if self._stopping.is_set():
                return
            logger.warning(
                "lost the connection to the MQTT broker %s:%s (%s); reconnecting",
                self._host,
                self._port,
                error or "closed",
            )

    async def _send_subscriptions(self) -> None:
        """Send the subscription changes the current session lacks, in no particular order."""
        assert self._client is not None
        for topic in list(self._unsent_unsubscribes):
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.unsubscribe(topic)
                self._unsent_unsubscribes.discard(topic)
        for topic in list(self._unsent):
            wanted = self._subscriptions.get(topic)
            if wanted is None:
                self._unsent.discard(topic)
                continue
            try:
                codes = await self._client.subscribe_once(
                    topic, wanted.qos, wanted.options(self._mqtt5)
                )
            except aiomqtt.MqttError:
                return  # the connection broke: the next one sends the rest
            self._unsent.discard(topic)
            self._subscribed.set()
            if codes and codes[0] >= 0x80:
                logger.error("the broker refused the subscription to %r (code %s)", topic, codes)

    # -- messages to the application ---------------------------------------------------------

    def _on_broker_message(self, message: paho.MQTTMessage) -> None:
        if message.qos == 0:
            if self._queued_qos0 >= self.config.max_queued_qos0:
                self.stats.dropped_qos0 += 1
                if self.stats.dropped_qos0 in (1, 10, 100) or self.stats.dropped_qos0 % 1000 == 0:
                    logger.warning(
                        "the application is behind: %d QoS 0 messages dropped so far "
                        "(max_queued_qos0=%d); last on topic %r",
                        self.stats.dropped_qos0,
                        self.config.max_queued_qos0,
                        message.topic,
                    )
                return
            self._queued_qos0 += 1
            self._deliver(message_event(message, None))
            return
        # QoS 1/2: the broker's in-flight window bounds these, so none is ever dropped.
        self._next_id += 1
        self._unacked[self._next_id] = (self._generation, message.mid, message.qos)
        self._deliver(message_event(message, self._next_id))

    def _deliver(self, event: Message) -> None:
        self._inbox.append(event)
        self._changed.set()

    async def _receive(self) -> Message:
        while True:
            if self._closing:
                # Shutdown: what is still queued stays unacknowledged, for the broker to
                # send again to the next session.
                if self._disconnect_due:
                    self._disconnect_due = False
                    return {"type": "mqtt.disconnect"}
            elif self._inbox:
                event = self._inbox.popleft()
                if event["type"] == "mqtt.message":
                    self.stats.delivered += 1
                    if event["qos"] == 0:
                        self._queued_qos0 -= 1
                    else:
                        self._in_progress.add(event["id"])
                return event
            self._changed.clear()
            await self._changed.wait()

    # -- events from the application ---------------------------------------------------------

    async def _send(self, event: Message) -> None:
        kind = event.get("type")
        if kind == "mqtt.ack":
            self._ack(event)
        elif kind == "mqtt.publish":
            await self._publish(event)
        elif kind == "mqtt.subscribe":
            await self._subscribe(event)
        elif kind == "mqtt.unsubscribe":
            await self._unsubscribe(event)
        else:
            raise MqttError(
                f"the mqtt protocol has no event {kind!r} for an application to send "
                "(mqtt.publish, mqtt.subscribe, mqtt.unsubscribe, mqtt.ack)"
            )

    def _ack(self, event: Message) -> None:
        ack_id = event.get("id")
        if ack_id is None:
            return  # a QoS 0 message: nothing to acknowledge
        self._in_progress.discard(ack_id)
        found = self._unacked.pop(ack_id, None)
        if found is None:
            logger.debug("mqtt.ack for unknown or already acknowledged id %r", ack_id)
            return
        generation, mid, qos = found
        assert self._client is not None
        if generation == self._generation and self._client.is_connected:
            self._client.ack(mid, qos)
            self.stats.acked += 1
        elif qos == 2 and not self.config.clean_session:
            # A QoS 2 message is handed over once its PUBREL came; a PUBREL the broker sends
            # again on a later connection of the session is for a message paho delivered
            # already, so paho waits for us (manual acks) and the broker for the PUBCOMP
            # that completes it: without one the message holds a slot of its in-flight
            # window for good, and once all are held nothing more is delivered. The packet
            # id stays the message's until then, so the PUBCOMP goes on the next connection.
            self._pubcomp_due.add(mid)
            self._send_due_pubcomps()
        # A QoS 1 message from an earlier connection is sent again by the broker
        # (persistent session), handled again and acknowledged then: at least once.
        if self._closing and not self._in_progress:
            self._changed.set()

    def _send_due_pubcomps(self) -> None:
        client = self._client
        if client is None or not client.is_connected:
            return  # sent when the next connection is made
        for mid in sorted(self._pubcomp_due):
            client.ack(mid, 2)
            self.stats.acked += 1
        self._pubcomp_due.clear()

    async def _publish(self, event: Message) -> None:
        assert self._client is not None
        message = parse_publish(event, self._mqtt5)
        async with self._publish_slots:
            while True:
                # Wait for a connection: publishing into a closed socket would lose a QoS 0
                # message and leave a QoS 1/2 one to paho's resend after reconnecting.
                await self._connected.wait()
                try:
                    await self._client.publish_reliably(
                        message.topic,
                        message.payload,
                        message.qos,
                        message.retain,
                        message.properties,
                    )
                except aiomqtt.MqttCodeError as exc:
                    if exc.rc == paho.MQTT_ERR_NO_CONN:
                        continue  # the connection just dropped: send it on the next one
                    raise MqttError(f"publish to {message.topic!r} failed: {exc}") from exc
                self.stats.published += 1
                return

    async def _subscribe(self, event: Message) -> None:
        wanted = parse_subscribe(event)
        self._subscriptions[wanted.topic] = wanted
        self._unsent_unsubscribes.discard(wanted.topic)
        self._unsent.add(wanted.topic)
        if not self.connected:
            return  # sent once connected
        assert self._client is not None
        try:
            codes = await self._client.subscribe_once(
                wanted.topic, wanted.qos, wanted.options(self._mqtt5)
            )
        except aiomqtt.MqttError:
            return  # the connection broke; the next one subscribes
        self._unsent.discard(wanted.topic)
        self._subscribed.set()
        if codes and codes[0] >= 0x80:
            self._subscriptions.pop(wanted.topic, None)
            raise MqttError(f"the broker refused the subscription to {wanted.topic!r}: {codes}")

    async def _unsubscribe(self, event: Message) -> None:
        topic = _require_topic(event, wildcards=True)
        self._subscriptions.pop(topic, None)
        self._unsent.discard(topic)
        self._unsent_unsubscribes.add(topic)
        if not self.connected:
            return
        assert self._client is not None
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client.unsubscribe(topic)
            self._unsent_unsubscribes.discard(topic)

    # -- the application and shutdown --------------------------------------------------------

    async def _run_application(self) -> None:
        await self.application(self.scope, self._receive, self._send)

    async def _shutdown(self, app: asyncio.Task[None], link: asyncio.Task[None]) -> None:
        """Let the application finish what it holds, tell it to stop, then disconnect."""
        assert self._client is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.shutdown_timeout
        self._closing = True
        self._changed.set()
        # 1. Messages the application received and has not acknowledged yet.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                while self._in_progress and not app.done():
                    self._changed.clear()
                    await self._changed.wait()
        if self._in_progress:
            logger.warning(
                "shutdown: %d messages were still being handled after %.1f s; the broker "
                "sends them again to the next session",
                len(self._in_progress),
                self.config.shutdown_timeout,
            )
        # 2. mqtt.disconnect: the application runs its disconnect hook and returns.
        self._disconnect_due = True
        self._changed.set()
        done, _ = await asyncio.wait({app}, timeout=max(0.0, deadline - loop.time()))
        if not done:
            logger.error(
                "shutdown: the MQTT application did not return within %.1f s of "
                "mqtt.disconnect; cancelling it",
                self.config.shutdown_timeout,
            )
            app.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await app
        elif not app.cancelled() and app.exception() is not None:
            logger.error("the MQTT application failed at shutdown", exc_info=app.exception())
        # 3. DISCONNECT, once the application's last publishes went out.
        link.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await link
        if self._client.is_connected:
            await self._client.disconnect()
        logger.info("disconnected from the MQTT broker %s:%s", self._host, self._port)
