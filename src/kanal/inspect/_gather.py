"""The inspector's side: ask every process attached to a layer (or a server's metrics
listener) for its summary, and keep the last answers to give rates."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from kanal.exceptions import ConfigError, KanalError
from kanal.inspect._report import RATED, with_rates
from kanal.inspect._responder import INSPECT_GROUP, REPLY, REQUEST
from kanal.layers import BaseChannelLayer, layer_from_url

__all__ = ["DEFAULT_WAIT", "Inspector", "is_endpoint", "nothing_attached"]

#: Seconds the inspector waits for answers. The number of processes is not known in
#: advance, so every sample waits this long; a process busier than this is left out.
DEFAULT_WAIT = 0.5


def nothing_attached(url: str) -> str:
    """The sentence for no process answering on ``url``."""
    return (
        f"no kanal process is attached to {url}: none answered. Processes answer on the "
        "layer they use (kanal serve with $KANAL_LAYER set to it, kanal worker, kanal "
        "scheduler, kanal mqtt); a server on memory:// answers on its metrics listener: "
        "kanal inspect http://HOST:PORT (kanal serve --metrics PORT)."
    )


def is_endpoint(url: str) -> bool:
    """Whether ``url`` is a metrics listener's (``http://host:port``), not a layer's."""
    return urlsplit(url).scheme in ("http", "https")


#: What an answer must hold to be shown (another version's, or a stranger's, is left out).
_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "host": str,
    "pid": int,
    "role": str,
    "process": str,
    "taken": (int, float),
    "started": (int, float),
    "dropped": int,
    "pending": int,
    "largest_queue": int,
    "resident_bytes": int,
}
_RATED_TYPES = (int, float)


def _valid(summary: object) -> TypeGuard[dict[str, Any]]:
    if not isinstance(summary, dict):
        return False
    if not all(isinstance(summary.get(k), t) for k, t in _REQUIRED.items()):
        return False
    return all(isinstance(summary.get(name, 0), _RATED_TYPES) for name in RATED)


def _key(summary: dict[str, Any]) -> tuple[str, int]:
    return summary["host"], summary["pid"]


class Inspector:
    """Samples the processes attached to ``url``: a layer's URL, or a metrics listener's
    (``http://127.0.0.1:9100``, for a server on ``memory://``, whose layer nobody else
    can reach)."""

    def __init__(self, url: str, *, wait: float = DEFAULT_WAIT) -> None:
        self.url = url
        self.wait = wait
        self._layer: BaseChannelLayer | None = None
        self._reply: str | None = None
        self._round = 0
        self._last: dict[tuple[str, int], dict[str, Any]] = {}
        #: Answers left out for not holding what a summary holds.
        self.ignored = 0

    async def sample(self) -> list[dict[str, Any]]:
        """One summary per process that answered in time, with ``rates`` since the last
        sample (none the first time), sorted by host, role and process."""
        found = await (self._from_endpoint() if is_endpoint(self.url) else self._from_layer())
        summaries = []
        last, self._last = self._last, {}  # a process that stopped answering is forgotten
        for summary in found:
            key = _key(summary)
            summaries.append(with_rates(summary, last.get(key)))
            self._last[key] = summary
        return sorted(summaries, key=lambda s: (s["host"], s["role"], s["process"], s["pid"]))

    async def _from_layer(self) -> list[dict[str, Any]]:
        if self._layer is None:
            self._layer = layer_from_url(self.url)
            self._reply = await self._layer.new_channel("inspector")
        layer, reply = self._layer, self._reply
        assert reply is not None
        self._round += 1
        current = self._round
        await layer.group_send(INSPECT_GROUP, {"type": REQUEST, "reply": reply, "round": current})
        found: dict[tuple[str, int], dict[str, Any]] = {}
        deadline = time.monotonic() + self.wait
        while (left := deadline - time.monotonic()) > 0:
            try:
                async with asyncio.timeout(left):
                    answer = await layer.receive(reply)
            except TimeoutError:
                break
            process = answer.get("process")
            # A late answer to an earlier round is not this sample's.
            if answer.get("round") == current and answer.get("type") == REPLY:
                if not _valid(process):
                    self.ignored += 1
                    continue
                found[_key(process)] = process
        return list(found.values())

    async def _from_endpoint(self) -> list[dict[str, Any]]:
        address = self.url.rstrip("/") + "/inspect"

        def fetch() -> Any:
            with urllib.request.urlopen(address, timeout=max(self.wait, 2.0)) as response:
                return json.load(response)

        try:
            data = await asyncio.to_thread(fetch)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise KanalError(f"cannot read {address}: {exc}") from exc
        processes = data.get("processes") if isinstance(data, dict) else None
        if not isinstance(processes, list):
            raise ConfigError(f"{address} did not answer as a kanal metrics listener does")
        return [p for p in processes if _valid(p)]

    async def close(self) -> None:
        """Close the layer the inspector opened."""
        layer, self._layer = self._layer, None
        if layer is not None:
            await layer.close()
