"""The decoupled mode: interface servers hold sockets, workers run the application.

The server side is an ASGI application, :class:`BridgeApp` (``kanal serve --bridge``, or
``kanal serve kanal.bridge.asgi:application``). The worker side, :class:`BridgeWorker`
(``kanal worker --bridge module:app``), takes the connections the servers announce and runs
one application instance for each. Every event of a connection crosses the channel layer,
in order; each side reads a process-specific channel of its own (the layer's fast path).

The hand-over, step by step: what the server and the workers send each other (the messages
and their fields are in :mod:`kanal.bridge._messages`), and the server's :class:`State` of
the connection after each step::

    step  sender -> channel         message, and when                           state after
    ----  ------------------------  ------------------------------------------  -----------
    1     server -> kanal.bridge    bridge.open: a client connects (scope, the   ANNOUNCED
                                    reply channel, the first event when small)
    2     worker A -> reply         bridge.attached: A took the announcement     ATTACHED
                                    (A's inbound channel)
    3     server -> A's inbound     bridge.receive: each client event, in order  ATTACHED
                                    (HTTP bodies in chunks)
    4     worker A -> reply         bridge.send: each event of the application   ATTACHED
                                    (several at once in one bridge.batch)
    5     worker A -> reply         bridge.detach: A stops; the WebSocket's      DETACHED
                                    application took websocket.suspend and
                                    returned (a consumer answers with its state
                                    in websocket.suspended and leaves its
                                    groups); the server holds new client events
    6     server -> A's inbound     bridge.detach_ack: right after 5, the last   DETACHED
                                    message there (FIFO: A has all before it)
    7     worker A -> kanal.bridge  bridge.open with resume, state, groups and   DETACHED
                                    pending (the events A collected between 5
                                    and 6)
    8     worker B -> reply         bridge.attached: B took it over; its new     ATTACHED
                                    instance starts with websocket.resume (the
                                    state; no connect), or without a state with
                                    a replayed websocket.connect whose accept is
                                    hidden; then pending; the server forwards
                                    what it held
    9     worker B -> reply         bridge.done, a complete HTTP response, or    CLOSED
                                    bridge.error (500 for HTTP, 1011 for a
                                    WebSocket)

And when a step does not come:

- no ``bridge.attached`` within ``attach_timeout`` after 1: HTTP gets 503, a WebSocket
  handshake is refused (CLOSED);
- more than ``max_held`` client events held between 5 and 8: the WebSocket is closed with
  1013, try again later (CLOSED);
- no ``bridge.detach_ack`` within ``detach_timeout`` after 5 (the server is gone): worker A
  logs it and does not announce the connection again;
- the client leaves and the worker does not finish within 10 s: the server stops waiting
  (CLOSED);
- the attached worker sends no heartbeat (``bridge.alive``) for three of its heartbeats:
  it is dead. A WebSocket goes back to DETACHED and the server announces it again itself
  (a new reply channel, no state: connect is replayed, its accept hidden); no
  ``bridge.attached`` within ``attach_timeout``: closed with 1012 (CLOSED). An HTTP request
  gets 503, or is cut short if its response had started (CLOSED);
- the server sends no heartbeat: the worker gives its connections' applications a
  disconnect (1006); a server alive that no longer lists a connection (it closed it, or gave
  it to another worker): the worker ends that instance quietly.

Steps 5 to 8 happen only to WebSockets; a stopping worker finishes its HTTP requests.
Nothing the client sends is lost or reordered by a hand-over; what it sent to a worker that
died and that the worker had not handled is lost (at-most-once, as the layer).
"""

from kanal.bridge._liveness import DEFAULT_HEARTBEAT
from kanal.bridge._messages import BRIDGE_CHANNEL, MessageType
from kanal.bridge._scope import scope_from_wire, scope_to_wire
from kanal.bridge._server import (
    DEFAULT_ATTACH_TIMEOUT,
    DEFAULT_MAX_HELD,
    TRANSITIONS,
    BridgeApp,
    BridgeStats,
    State,
)
from kanal.bridge._worker import DEFAULT_DETACH_TIMEOUT, BridgeWorker

__all__ = [
    "BRIDGE_CHANNEL",
    "DEFAULT_ATTACH_TIMEOUT",
    "DEFAULT_DETACH_TIMEOUT",
    "DEFAULT_HEARTBEAT",
    "DEFAULT_MAX_HELD",
    "TRANSITIONS",
    "BridgeApp",
    "BridgeStats",
    "BridgeWorker",
    "MessageType",
    "State",
    "scope_from_wire",
    "scope_to_wire",
]
