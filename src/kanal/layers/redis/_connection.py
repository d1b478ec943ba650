"""Redis connections: host specs as Channels writes them, clients per event loop, batching.

A :class:`HostSpec` is what the configuration says (a URL, a ``(host, port)`` pair, a dict,
a Sentinel dict); it makes clients without doing I/O. :class:`Batcher` is the layer's
only way to run commands: everything issued in one event-loop iteration goes to Redis in
one pipeline, so a burst of 500 ``group_discard`` calls is one round trip on one
connection, not 500 connections taken from a pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from kanal._backoff import Backoff
from kanal._histogram import Histogram
from kanal._tasks import detached_task
from kanal.exceptions import ConfigError, LayerUnavailable
from kanal.layers.redis._scripts import SCRIPTS

__all__ = [
    "Batcher",
    "HostSpec",
    "NotSent",
    "Recovery",
    "Wire",
    "parse_hosts",
    "quiet",
    "unavailable_errors",
]

logger = logging.getLogger("kanal.layers.redis")

#: Errors that mean "Redis cannot be reached right now" (as opposed to a bad command).
unavailable_errors: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError,
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    OSError,
)

Client = Redis | RedisCluster

# What a batcher runs first once Redis answers again after an outage (the layer's
# memberships, re-added in case the server lost them), and what to call once that ran.
Recovery = Callable[["Batcher"], tuple[list[tuple[Any, ...]], Callable[[], None]]]

# Errors of a connection that worked before and is found dead: the server closed it (a
# restart, a failover, an idle timeout). Not a timeout: a server too slow to answer may
# still run the commands.
_dead_connection_errors = (redis_errors.ConnectionError, ConnectionError)


class NotSent(redis_errors.ConnectionError):
    """The commands did not reach a live server, so running them again cannot run them twice.

    Connecting failed (``stale`` False), or a connection made before an outage turned out
    dead before it answered anything (``stale`` True: the server it led to is gone, or
    closed it). Internal to the Redis layer: callers get LayerUnavailable. A connection
    error still, for the receive loops, which retry any.
    """

    def __init__(self, cause: BaseException, *, stale: bool) -> None:
        super().__init__(str(cause) or type(cause).__name__)
        self.cause = cause
        self.stale = stale


def quiet(future: asyncio.Future[Any]) -> None:
    """Done-callback for fire-and-forget commands: retrieve the error so none is logged."""
    if not future.cancelled():
        future.exception()


@dataclass
class HostSpec:
    """One configured Redis (a server, a Sentinel-managed master, or a cluster's entry)."""

    name: str  # a stable name: it places the host on the hash ring and appears in errors
    url: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    sentinels: list[tuple[str, int]] | None = None
    master_name: str | None = None
    sentinel_kwargs: dict[str, Any] = field(default_factory=dict)

    def make_client(
        self, *, timeout: float, blocking: bool, cluster: bool
    ) -> tuple[Client, list[Redis]]:
        """A client for this host, and the helper clients to close with it (Sentinels).

        ``blocking`` makes one for BLMPOP/BLPOP (a cluster client's socket timeout then
        allows for the wait).
        """
        options: dict[str, Any] = {
            "socket_connect_timeout": timeout,
            "health_check_interval": 0,
        }
        if not cluster:
            # No retries inside redis-py (its default is 10, with backoff): the batcher
            # retries what provably did not run, within the layer's outage bound, and a
            # connection refused must reach it at once, not after redis-py's backoff.
            options["retry"] = Retry(NoBackoff(), 0)
        if cluster:
            # Blocking pops wait up to _BLOCK seconds by design; the socket timeout must be
            # above that, or every idle wait would look like a dead server.
            options["socket_timeout"] = timeout + (10.0 if blocking else 0.0)
        else:
            # A plain (or Sentinel) client's commands all run under a deadline of the
            # layer's own (an asyncio.timeout around each pipeline and each blocking pop).
            # A socket timeout as well would cost, per round trip, a task (redis-py writes
            # through asyncio.wait_for) and a timer. None must be said: redis-py 8
            # defaults to 5 s. So any new use of these clients must bound its own time.
            options["socket_timeout"] = None
        options.update(self.kwargs)
        if cluster:
            if self.url is not None:
                return RedisCluster.from_url(self.url, **options), []
            return RedisCluster(**options), []
        if self.sentinels is not None:
            assert self.master_name is not None
            sentinel_options = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
            sentinel_options.update(self.sentinel_kwargs)
            sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8.2
                self.sentinels, sentinel_kwargs=sentinel_options, **options
            )
            client: Redis = sentinel.master_for(self.master_name, **options)
            return client, list(sentinel.sentinels)
        if self.url is not None:
            return Redis.from_url(self.url, **options), []
        return Redis(**options), []


def _sentinel_name(master: str, db: object) -> str:
    # The database is part of the name, as channels_redis tells such hosts apart; database 0
    # keeps the plain name, so that the shard names (and the hash ring) stay as they were.
    return f"sentinel:{master}/{db}" if db else f"sentinel:{master}"


def _from_url(url: str) -> list[HostSpec]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "redis+sentinel":
        # redis+sentinel://[password@]host:port[,host:port...]/master_name[/db]
        location = parts.netloc.rpartition("@")
        userinfo = location[0]
        username, colon, secret = userinfo.partition(":")
        password = unquote(secret if colon else userinfo) if location[1] else None
        username = unquote(username) if colon and username else ""
        sentinels = []
        for item in location[2].split(","):
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"sentinel address {item!r} in {url!r} is not host:port")
            sentinels.append((host.strip("[]"), int(port)))
        path = [piece for piece in parts.path.split("/") if piece]
        if not path:
            raise ConfigError(f"{url!r} names no master: use redis+sentinel://host:port/name")
        kwargs: dict[str, Any] = {"db": int(path[1]) if len(path) > 1 else 0}
        if password:
            kwargs["password"] = password
        if username:
            kwargs["username"] = username
        return [
            HostSpec(
                name=_sentinel_name(path[0], kwargs["db"]),
                sentinels=sentinels,
                master_name=path[0],
                kwargs=kwargs,
            )
        ]
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"unsupported Redis URL scheme in {url!r}")
    if "," in parts.netloc:
        # redis://h1:6379,h2:6380/0 : several servers to shard over, same path and options.
        credentials, at, hosts = parts.netloc.rpartition("@")
        return [
            spec
            for host in hosts.split(",")
            for spec in _from_url(
                parts._replace(netloc=f"{credentials}{at}{host}", query="").geturl()
            )
        ]
    # The query string belongs to the layer (prefix, capacity...), not to the connection.
    bare = parts._replace(query="", fragment="").geturl()
    return [HostSpec(name=f"{parts.hostname}:{parts.port or 6379}{parts.path}", url=bare)]


def parse_hosts(hosts: Any) -> list[HostSpec]:
    """Channels-style ``hosts`` -> specs: URLs, ``(host, port)`` pairs or dicts."""
    if hosts is None:
        hosts = [("localhost", 6379)]
    if isinstance(hosts, (str, Mapping)) or (
        isinstance(hosts, tuple) and len(hosts) == 2 and isinstance(hosts[1], int)
    ):
        hosts = [hosts]
    if not isinstance(hosts, Iterable):
        raise ConfigError(f"hosts must be a list of URLs, (host, port) pairs or dicts: {hosts!r}")
    specs: list[HostSpec] = []
    for host in hosts:
        if isinstance(host, str):
            specs.extend(_from_url(host))
        elif isinstance(host, Sequence) and len(host) == 2 and isinstance(host[1], int):
            specs.append(
                HostSpec(name=f"{host[0]}:{host[1]}", kwargs={"host": host[0], "port": host[1]})
            )
        elif isinstance(host, Mapping):
            specs.append(_from_mapping(host))
        else:
            raise ConfigError(
                f"a Redis host must be a URL, a (host, port) pair or a dict, not {host!r}"
            )
    if not specs:
        raise ConfigError("hosts is empty: give at least one Redis server")
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"a Redis host is listed twice in hosts: {names}")
    return specs


def _from_mapping(host: Mapping[str, Any]) -> HostSpec:
    options = dict(host)
    if "sentinels" in options:
        sentinels = [(str(h), int(p)) for h, p in options.pop("sentinels")]
        master_name = options.pop("master_name", None)
        if not master_name:
            raise ConfigError(f"a Sentinel host needs a 'master_name': {dict(host)!r}")
        sentinel_kwargs = dict(options.pop("sentinel_kwargs", None) or {})
        address = options.pop("address", None)
        if address:  # channels_redis allows an address for the master's options; unused
            raise ConfigError(f"a Sentinel host takes no 'address': {dict(host)!r}")
        return HostSpec(
            name=_sentinel_name(str(master_name), options.get("db", 0)),
            sentinels=sentinels,
            master_name=str(master_name),
            sentinel_kwargs=sentinel_kwargs,
            kwargs=options,
        )
    address = options.pop("address", None)
    if address is not None:
        if isinstance(address, str):
            specs = _from_url(address)
            if len(specs) != 1:
                raise ConfigError(f"one address per host dict, not {address!r}")
            spec = specs[0]
            spec.kwargs.update(options)
            return spec
        options["host"], options["port"] = address
    if "host" not in options:
        raise ConfigError(f"a Redis host dict needs 'address' or 'host': {dict(host)!r}")
    name = f"{options['host']}:{options.get('port', 6379)}/{options.get('db', 0)}"
    return HostSpec(name=name, kwargs=options)


class Wire:
    """One connection of a plain (or Sentinel-managed) client, used directly.

    A whole batch is packed by hiredis into one write and its replies are read in order:
    no pool checkout, retry wrapper or per-command bookkeeping per call, which is most of
    redis-py's cost per command. After any error the connection is dropped (its state is
    unknown) and the next call reconnects, asking Sentinel for the master if there is one.
    """

    def __init__(self, client: Redis) -> None:
        self.client = client
        self._connection: Any = None

    async def run(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Send ``commands`` in one write; return their replies (errors as values).

        Raises :class:`NotSent` when provably nothing ran: connecting failed, or the
        connection kept from earlier calls was found dead before any reply.
        """
        connection = self._connection
        kept = connection is not None
        if connection is None:
            # A connection of its own, made here, not one from the client's pool: one the
            # pool kept may have died with the server, and only a connection made now
            # proves, when it fails, that nothing reached a live server.
            connection = self.client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
            try:
                await connection.connect()
            except unavailable_errors as exc:
                with contextlib.suppress(Exception):
                    await connection.disconnect(nowait=True)
                raise NotSent(exc, stale=False) from exc
            except BaseException:
                with contextlib.suppress(Exception):
                    await connection.disconnect(nowait=True)
                raise
            self._connection = connection
        results: list[Any] = []
        try:
            await connection.send_packed_command(
                b"".join([hiredis.pack_command(command) for command in commands]),
                check_health=False,
            )
            for _ in commands:
                try:
                    results.append(await connection.read_response())
                except redis_errors.ResponseError as exc:
                    results.append(exc)
            return results
        except BaseException as exc:
            await self.drop()
            if kept and not results and isinstance(exc, _dead_connection_errors):
                raise NotSent(exc, stale=True) from exc
            raise

    async def drop(self) -> None:
        """Close the connection (the next call makes a new one)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)


# Delays between attempts to reach Redis while commands are held (see Batcher): quick
# first ones (a restart on the same machine takes well under a second), then 0.5 s.
_PROBE_FIRST = 0.05
_PROBE_CEILING = 0.5

Batch = list[tuple[tuple[Any, ...], "asyncio.Future[Any]"]]


class Batcher:
    """Runs commands for one client, pipelining those issued in the same loop iteration.

    At most ``max_in_flight`` pipelines are on the wire at once; commands issued meanwhile
    queue up and leave together in the next one. Calls fail with
    :class:`~kanal.exceptions.LayerUnavailable` when Redis does not answer within
    ``timeout`` seconds.

    An outage (plain and Sentinel clients): commands that provably did not reach Redis
    (connecting failed) are held, in the order they were issued, with everything issued
    after them, while one probe tries to reach Redis again. When it answers, ``recovery``
    runs first (the layer re-adds its memberships, in case the server lost them), then the
    held commands, in order. An outage longer than ``outage_timeout`` fails what is held
    with LayerUnavailable; until Redis answers again, each later pipeline then tries once
    and fails at once. A connection that died while idle is replaced and its commands sent
    once more before they fail a caller (nothing had run on it). Commands in flight when
    the server died fail, as their effect is unknown.
    """

    def __init__(
        self,
        client: Client,
        name: str,
        timeout: float,
        max_in_flight: int = 2,
        *,
        outage_timeout: float = 0.0,
        recovery: Recovery | None = None,
        round_trips: Histogram | None = None,
    ) -> None:
        self.client = client
        #: Where the seconds of each successful pipeline go (the layer's stats).
        self.round_trips = round_trips
        self.name = name
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.outage_timeout = outage_timeout
        self.recovery = recovery
        #: Pipelines sent again on a new connection because the kept one was found dead.
        self.stale_retries = 0
        #: Outages that held commands, and those of them that outlasted outage_timeout.
        self.outages = 0
        self.outages_too_long = 0
        self._queue: Batch = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._wires: list[Wire] | None = None
        if isinstance(client, Redis):
            self._wires = [Wire(client) for _ in range(max_in_flight)]
        # Order of pipelines taken from the queue: held ones go back in this order.
        self._seq = 0
        # Outage state: since when commands are held (None: not holding), what is held
        # (by order), the probe, and whether an outage outlasted the bound (then nothing
        # is held until Redis answers again).
        self._down_since: float | None = None
        self._held: list[tuple[int, Batch]] = []
        self._probe: asyncio.Task[None] | None = None
        self._probe_wire: Wire | None = None
        self._failing = False
        # A command failed with Redis unreachable: the next success runs recovery first.
        self._suspect = False

    def call(self, *args: Any) -> asyncio.Future[Any]:
        """Queue one command; the future gets its reply (or the error)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._closed:
            future.set_exception(LayerUnavailable(f"the layer was closed ({self.name})"))
            return future
        self._queue.append((args, future))
        if not self._scheduled and self._in_flight < self.max_in_flight:
            self._scheduled = True
            loop.call_soon(self._start)
        return future

    def _start(self) -> None:
        self._scheduled = False
        if (
            self._closed
            or not self._queue
            or self._in_flight >= self.max_in_flight
            or self._down_since is not None  # held until the probe reaches Redis
        ):
            return
        # 4,096 commands per pipeline: large enough to absorb any burst in a few round
        # trips, small enough that one pipeline's reply does not hold the loop for long.
        batch = self._queue[:4096]
        del self._queue[:4096]
        self._in_flight += 1
        self._seq += 1
        started: list[bool] = []
        task = detached_task(self._run(batch, started, self._seq))
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._ended, batch, started))

    def _ended(self, batch: Batch, started: list[bool], task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not started:
            # Cancelled (by aclose) before its first step: _run never ran, so nothing
            # answered its callers or gave back its place on the wire. Else they waited
            # forever.
            self._in_flight -= 1
            error = LayerUnavailable(f"the layer closed before Redis at {self.name} answered")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)

    async def run(self, *args: Any) -> Any:
        """Run one command and return its reply.

        With nothing queued, on the wire or held, the caller sends it itself: no extra
        task or loop iteration for a lone command (a sequential sender's case). Otherwise
        it joins the next pipeline.
        """
        if self._closed:
            raise LayerUnavailable(f"the layer was closed ({self.name})")
        if self._in_flight or self._queue or self._wires is None or self._down_since is not None:
            return await self.call(*args)
        self._in_flight += 1
        self._seq += 1
        seq = self._seq
        held: asyncio.Future[Any] | None = None
        try:
            result = (await self._execute([args]))[0]
        except NotSent as exc:
            if self._failing or not self.outage_timeout:
                raise self._unavailable(exc.cause) from exc.cause
            held = asyncio.get_running_loop().create_future()
            self._hold(seq, [(args, held)], exc)
        except unavailable_errors as exc:
            raise self._convert(exc) from exc
        except TimeoutError:
            raise self._convert(TimeoutError()) from None
        finally:
            self._in_flight -= 1
            self._schedule()
        if held is not None:
            return await held
        if isinstance(result, BaseException):
            raise self._convert(result)
        return result

    def _schedule(self) -> None:
        if self._queue and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start)

    def _convert(self, error: BaseException) -> BaseException:
        if isinstance(error, LayerUnavailable) or not isinstance(error, unavailable_errors):
            return error
        return self._unavailable(error)

    async def _run(self, batch: Batch, started: list[bool], seq: int) -> None:
        started.append(True)  # from here on, _run answers its callers (see _ended)
        results: list[Any]
        try:
            results = await self._execute([args for args, _ in batch])
        except NotSent as exc:
            if self._failing or not self.outage_timeout or self._closed:
                results = [self._unavailable(exc.cause)] * len(batch)
            else:
                self._hold(seq, batch, exc)
                return
        except asyncio.CancelledError:
            error: BaseException = LayerUnavailable(
                f"the layer closed before Redis at {self.name} answered"
            )
            results = [error] * len(batch)
        except unavailable_errors as exc:  # TimeoutError is an OSError, so included
            results = [self._convert(exc)] * len(batch)
        finally:
            self._in_flight -= 1
            self._schedule()
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(self._convert(result))
            else:
                future.set_result(result)

    def _unavailable(self, exc: BaseException) -> LayerUnavailable:
        self._suspect = True
        if isinstance(exc, (redis_errors.TimeoutError, TimeoutError)):
            error = LayerUnavailable(
                f"Redis at {self.name} did not answer within {self.timeout:g} s"
            )
        else:
            reason = str(exc) or type(exc).__name__
            error = LayerUnavailable(f"Redis at {self.name} is unavailable: {reason}")
        error.__cause__ = exc
        return error

    def _recovery(self) -> tuple[list[tuple[Any, ...]], Callable[[], None] | None]:
        if self.recovery is None:
            return [], None
        return self.recovery(self)

    async def _execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Run ``commands`` (after the recovery commands, if Redis was found unreachable
        since the last success); a dead kept connection is replaced once."""
        recovery, recovered = self._recovery() if self._suspect or self._failing else ([], None)
        started = time.perf_counter()
        async with asyncio.timeout(self.timeout):
            try:
                results = await self._attempt(recovery + commands)
            except NotSent as exc:
                if not exc.stale:
                    raise
                # Nothing ran on the dead connection; its server may be a new one that
                # lost the memberships, so they go first on the new connection.
                self.stale_retries += 1
                logger.info(
                    "a connection to Redis at %s was found closed; sent again on a new one",
                    self.name,
                )
                if not recovery:
                    recovery, recovered = self._recovery()
                results = await self._attempt(recovery + commands)
        if self.round_trips is not None:
            self.round_trips.observe(time.perf_counter() - started)
        self._back()
        if recovered is not None:
            recovered()
        return results[len(recovery) :]

    def _back(self) -> None:
        """Redis answered: no more recovery due."""
        self._suspect = False
        if self._failing:
            self._failing = False
            logger.warning("Redis at %s answers again", self.name)

    async def _attempt(
        self, commands: list[tuple[Any, ...]], wire: Wire | None = None
    ) -> list[Any]:
        """Run ``commands`` on one connection (``wire``, else an idle one of the batcher's)."""
        if wire is None and self._wires is not None:
            wire = self._wires.pop()
            try:
                return await self._attempt(commands, wire)
            finally:
                self._wires.append(wire)
        results = await self._pipeline(commands, wire)
        missing = [i for i, r in enumerate(results) if isinstance(r, redis_errors.NoScriptError)]
        if missing:
            # A new or restarted server: load every script once, then redo what failed
            # (a NOSCRIPT command did nothing, so running it again is safe). On the same
            # connection: one of the client's pool may be from before a restart, dead.
            if wire is not None:
                await wire.run([("SCRIPT", "LOAD", script.source) for script in SCRIPTS.values()])
            else:
                for script in SCRIPTS.values():
                    await self.client.script_load(script.source)
            retried = await self._pipeline([commands[i] for i in missing], wire)
            for i, result in zip(missing, retried, strict=True):
                results[i] = result
        return results

    async def _pipeline(self, commands: list[tuple[Any, ...]], wire: Wire | None) -> list[Any]:
        if wire is not None:
            return await wire.run(commands)
        if len(commands) == 1:
            try:
                return [await self.client.execute_command(*commands[0])]
            except redis_errors.ResponseError as exc:
                return [exc]
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    # -- outages ------------------------------------------------------------------------

    def _hold(self, seq: int, batch: Batch, exc: NotSent) -> None:
        """Keep ``batch`` (which did not reach Redis) until Redis answers or the bound ends."""
        self._held.append((seq, batch))
        if self._down_since is not None:
            return
        self._down_since = time.monotonic()
        self.outages += 1
        self._suspect = True
        logger.warning(
            "Redis at %s is unreachable (%s); holding commands for up to %g s",
            self.name,
            exc,
            self.outage_timeout,
        )
        if self._wires is not None and self._probe_wire is None:
            assert isinstance(self.client, Redis)
            self._probe_wire = Wire(self.client)
        self._probe = detached_task(
            self._wait_for_redis(self._down_since, exc.cause), name=f"kanal-redis-probe-{self.name}"
        )

    async def _wait_for_redis(self, since: float, error: BaseException) -> None:
        """Try to reach Redis until it answers (then send what is held) or the bound ends."""
        backoff = Backoff(_PROBE_FIRST, _PROBE_CEILING)
        deadline = since + self.outage_timeout
        while not self._closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await asyncio.sleep(min(backoff.next(), left))
            recovery, recovered = self._recovery()
            try:
                async with asyncio.timeout(self.timeout):
                    await self._attempt(recovery or [("PING",)], self._probe_wire)
            except NotSent as exc:
                error = exc.cause
                continue
            except unavailable_errors as exc:  # includes TimeoutError; the probe is idempotent
                error = exc
                continue
            if recovered is not None:
                recovered()
            waiting = sum(len(batch) for _, batch in self._held)
            logger.warning(
                "Redis at %s is reachable again after %.1f s; sending the %d command(s) held",
                self.name,
                time.monotonic() - since,
                waiting + len(self._queue),
            )
            self._suspect = False
            self._release_held()
            return
        self.outages_too_long += 1
        failure = self._unavailable(error)
        failure.args = (
            f"Redis at {self.name} was unreachable for more than {self.outage_timeout:g} s: "
            f"{str(error) or type(error).__name__}",
        )
        held, self._held = self._held, []
        queued, self._queue = self._queue, []
        self._down_since = None
        self._failing = True
        logger.warning(
            "Redis at %s stayed unreachable for %g s: %d held command(s) failed; "
            "commands fail at once until it answers again",
            self.name,
            self.outage_timeout,
            sum(len(batch) for _, batch in held) + len(queued),
        )
        for _, batch in held:
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
        for _, future in queued:
            if not future.done():
                future.set_exception(failure)

    def _release_held(self) -> None:
        """Put what is held back in front of the queue, in issue order, and send it."""
        held, self._held = sorted(self._held, key=lambda entry: entry[0]), []
        self._queue[:0] = [command for _, batch in held for command in batch]
        self._down_since = None
        self._schedule()

    async def aclose(self) -> None:
        """Cancel pipelines still running (their callers get LayerUnavailable)."""
        self._closed = True  # no new pipeline starts from here on
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for wire in [*(self._wires or ()), *([self._probe_wire] if self._probe_wire else [])]:
            await wire.drop()
        closed = LayerUnavailable(f"the layer was closed ({self.name})")
        held, self._held = self._held, []
        for _, batch in held:
            for _, future in batch:
                if not future.done():
                    future.set_exception(closed)
        for _, future in self._queue:
            if not future.done():
                future.set_exception(closed)
        self._queue.clear()
