"""Several real Redis processes for tests: a Sentinel-watched master with a replica, and a
small Redis Cluster made with ``redis-cli --cluster create``."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Sequence

from kanal.exceptions import KanalError
from kanal.testing._redis import RedisServer, _Started, free_port

__all__ = ["RedisCluster", "RedisSentinel", "SentinelServer"]


def _cluster_port(host: str = "127.0.0.1") -> int:
    """A free port below 55536 whose cluster bus port (port + 10000) is free too."""
    for _ in range(100):
        port = free_port(host)
        if port > 55535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind((host, port + 10000))
            except OSError:
                continue
        return port
    raise KanalError("no free port pair for a cluster node (port and port + 10000)")


class SentinelServer(RedisServer):
    """``redis-server <conf> --sentinel`` watching one master as ``master_name``.

    Failure detection is tuned for tests: the master counts as down after
    ``down_after_ms`` without answers (Redis' default is 30 s).
    """

    def __init__(
        self,
        master: RedisServer,
        master_name: str = "mymaster",
        *,
        down_after_ms: int = 500,
        failover_timeout_ms: int = 2000,
    ) -> None:
        super().__init__()
        self.master_name = master_name
        self.config = os.path.join(self._dir, "sentinel.conf")
        with open(self.config, "w") as file:
            # Sentinel rewrites this file as it learns about replicas and failovers.
            file.write(
                f"sentinel monitor {master_name} {master.host} {master.port} 1\n"
                f"sentinel down-after-milliseconds {master_name} {down_after_ms}\n"
                f"sentinel failover-timeout {master_name} {failover_timeout_ms}\n"
                f"sentinel parallel-syncs {master_name} 1\n"
            )

    #: Ready once it monitors the master.
    ready_text = "+monitor master"

    def command_line(self) -> list[str]:
        return [
            self.binary, self.config, "--sentinel",
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", self._dir,
            "--logfile", "",
            "--loglevel", "notice",
        ]  # fmt: skip


class RedisSentinel(_Started):
    """A master, one replica of it and one Sentinel (quorum 1), all on free ports."""

    def __init__(self, master_name: str = "mymaster") -> None:
        # No diskless-sync delay: the replica syncs at once instead of after 5 s.
        self.master = RedisServer(args=["--repl-diskless-sync-delay", "0"])
        self.replica = RedisServer(args=["--replicaof", self.master.host, str(self.master.port)])
        self.sentinel = SentinelServer(self.master, master_name)
        self.master_name = master_name

    def start(self) -> None:
        """Start master, replica (waiting for its sync) and sentinel."""
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        self.master.start()
        self.replica.start()
        self.replica.wait_for_log("MASTER <-> REPLICA sync: Finished with success")
        self.sentinel.start()

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """``[(host, port)]`` of the sentinel, as a layer's hosts entry wants it."""
        return [(self.sentinel.host, self.sentinel.port)]

    def close(self) -> None:
        """Stop every process."""
        for server in (self.sentinel, self.replica, self.master):
            server.close()


class RedisCluster(_Started):
    """``nodes`` primaries (no replicas) joined by ``redis-cli --cluster create``."""

    def __init__(self, nodes: int = 3) -> None:
        if nodes < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 primaries")
        self.nodes = [
            RedisServer(
                _cluster_port(),
                args=["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"],
            )
            for _ in range(nodes)
        ]

    @property
    def addresses(self) -> Sequence[str]:
        """``host:port`` of every node."""
        return [f"{node.host}:{node.port}" for node in self.nodes]

    @property
    def url(self) -> str:
        """A ``redis://`` URL of one node: a cluster client discovers the others."""
        return self.nodes[0].url

    def start(self, timeout: float = 30.0) -> None:
        """Start the nodes, create the cluster, and wait until every node reports it ok."""
        try:
            self._start(timeout)
        except BaseException:
            self.close()
            raise

    def _start(self, timeout: float) -> None:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise KanalError("redis-cli is not installed (apt-get install redis-tools)")
        result = subprocess.run(
            [cli, "--cluster", "create", *self.addresses, "--cluster-replicas", "0",
             "--cluster-yes"],
            capture_output=True,
            timeout=timeout,
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise KanalError(
                "redis-cli --cluster create failed:\n" + result.stdout.decode(errors="replace")
            )
        for node in self.nodes:
            node.wait_for_log("Cluster state changed: ok", timeout)

    def close(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.close()
