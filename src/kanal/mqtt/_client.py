"""The broker connection: aiomqtt's client, with what an interface server needs on top.

aiomqtt runs paho-mqtt's protocol on the event loop. An interface server needs four things
that aiomqtt's public API does not give, so this subclass reaches into it here, and only
here (the aiomqtt version is pinned below 3 in ``pyproject.toml`` for that reason):

* **acknowledging after handling** (paho's ``manual_ack``): a QoS 1/2 message is
  acknowledged once the application is done with it, so the broker redelivers what a
  crash interrupted, and its in-flight window holds it back while the application is slow;
* **the CONNACK's session-present flag**, to resubscribe only when the broker forgot;
* **one paho client across reconnections**: paho keeps unacknowledged publishes and
  half-received QoS 2 messages between connections of a persistent session, where a new
  client would lose them;
* **the incoming message as paho has it** (with its ``dup`` flag), handed to a callback
  instead of aiomqtt's unbounded queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

__all__ = ["BrokerClient"]


class BrokerClient(aiomqtt.Client):
    """An :class:`aiomqtt.Client` that hands messages to ``on_message`` and acks on request."""

    def __init__(
        self, *args: Any, on_message: Callable[[paho.MQTTMessage], None], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._client.manual_ack_set(True)
        self._deliver = on_message
        self.session_present = False
        self._published: dict[int, asyncio.Future[None]] = {}

    # -- connection --------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect (again) to the broker; :class:`aiomqtt.MqttError` if that fails."""
        # After a connection that broke, aiomqtt's "connected" future is still done, and
        # __aenter__ would return before the new CONNACK.
        if self._connected.done():
            self._connected = asyncio.get_running_loop().create_future()
        await self.__aenter__()

    async def wait_disconnected(self) -> BaseException | None:
        """Wait until the connection ends; the error that ended it, if any."""
        with contextlib.suppress(Exception):
            await asyncio.shield(self._disconnected)
        return None if self._disconnected.cancelled() else self._disconnected.exception()

    async def disconnect(self) -> None:
        """Send DISCONNECT and wait for the socket to close (nothing if already closed)."""
        with contextlib.suppress(aiomqtt.MqttError):
            await self.__aexit__(None, None, None)

    def release(self) -> None:
        """Forget a connection that broke, so that :meth:`connect` may run again."""
        if self._lock.locked():
            self._lock.release()

    @property
    def is_connected(self) -> bool:
        """True between a CONNACK and the end of that connection."""
        return (
            self._connected.done()
            and not self._connected.cancelled()
            and self._connected.exception() is None
            and not self._disconnected.done()
        )

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Any = None,
    ) -> None:
        self.session_present = bool(flags.session_present)
        super()._on_connect(client, userdata, flags, reason_code, properties)

    # -- messages ----------------------------------------------------------------------------

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._deliver(message)

    def ack(self, mid: int, qos: int) -> None:
        """Acknowledge a QoS 1/2 message of the current connection (PUBACK or PUBCOMP)."""
        self._client.ack(mid, qos)

    # -- publishing --------------------------------------------------------------------------

    async def publish_reliably(
        self, topic: str, payload: bytes, qos: int, retain: bool, properties: Any
    ) -> None:
        """Publish, and for QoS 1/2 wait for the broker's acknowledgement however long.

        paho keeps a QoS 1/2 message that is not acknowledged yet and sends it again
        after a reconnection; so this waits across reconnections instead of publishing
        twice. A QoS 0 message is sent once the connection is up (the caller waits for it).
        """
        info = self._client.publish(topic, payload, qos, retain, properties)
        if qos == 0:
            if info.rc != paho.MQTT_ERR_SUCCESS:
                raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
            return
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        if info.is_published():
            return
        done = self._published[info.mid] = asyncio.get_running_loop().create_future()
        try:
            await done
        finally:
            self._published.pop(info.mid, None)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        super()._on_publish(client, userdata, mid, reason_code, properties)
        waiter = self._published.get(mid)
        if waiter is not None and not waiter.done():
            if reason_code.is_failure:
                waiter.set_exception(
                    aiomqtt.MqttCodeError(reason_code, f"the broker refused publish {mid}")
                )
            else:
                waiter.set_result(None)

    async def subscribe_once(self, topic: str, qos: int, options: Any) -> list[int]:
        """SUBSCRIBE one filter; the reason codes of the SUBACK."""
        # paho takes the QoS inside MQTT 5's options, and refuses it given twice.
        granted = await self.subscribe(topic, 0 if options is not None else qos, options=options)
        return [int(code.value) if isinstance(code, ReasonCode) else int(code) for code in granted]
