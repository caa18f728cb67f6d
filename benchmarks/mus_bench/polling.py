"""What ``poll()`` costs with many running servers: Docker requests and CPU per poll interval, for DockerSpawner and
MultiUserSpawner objects made in this process, and whether MultiUserSpawner's shared container list still reports a
server that died."""

from __future__ import annotations

import asyncio
import logging
import re
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import docker
from dockerspawner import DockerSpawner

from hubstack import SINGLEUSER_IMAGE
from multiuser_spawner import MultiUserSpawner, names

from .scenarios import user_names

log = logging.getLogger("bench")


class RequestCounter:
    """Counts every HTTP request any docker-py client in this process sends to the engine, by method and path."""

    def __init__(self) -> None:
        self.count = 0
        self.paths: dict[str, int] = {}
        self._lock = threading.Lock()
        self._original = docker.APIClient.send

    def install(self) -> None:
        counter = self

        def send(client: Any, request: Any, **kwargs: Any) -> Any:
            path = re.sub(r"^/v[\d.]+/", "/", request.path_url.split("?", 1)[0])
            path = re.sub(r"/(containers|exec)/[^/]+", r"/\1/{id}", path)
            with counter._lock:
                counter.count += 1
                key = f"{request.method} {path}"
                counter.paths[key] = counter.paths.get(key, 0) + 1
            return counter._original(client, request, **kwargs)

        docker.APIClient.send = send  # type: ignore[method-assign]

    def uninstall(self) -> None:
        docker.APIClient.send = self._original  # type: ignore[method-assign]

    def snapshot(self) -> tuple[int, dict[str, int]]:
        with self._lock:
            return self.count, dict(self.paths)


@dataclass
class FakeUser:
    """What a spawner reads of its hub user when it only polls."""

    name: str

    @property
    def escaped_name(self) -> str:
        return self.name

    @property
    def id(self) -> str:
        return self.name  # the containers below carry it as their user id

    created = None  # unknown, as on the containers below

    @property
    def url(self) -> str:
        return f"/user/{self.name}/"


def make_poll_containers(api: docker.APIClient, prefix: str, n: int) -> dict[str, tuple[str, str]]:
    """n cheap running containers labelled like the project's notebooks; user -> (name, id)."""
    users = user_names(n)

    def make(user: str) -> tuple[str, str]:
        name = f"{prefix}-{user}"
        created = api.create_container(
            SINGLEUSER_IMAGE,
            command=["sleep", "infinity"],
            name=name,
            labels=names.Owner(hub=prefix, user=user, user_id=user).labels(names.ROLE_NOTEBOOK),
            host_config=api.create_host_config(network_mode="none", init=True),
        )
        api.start(created["Id"])
        return name, created["Id"]

    with ThreadPoolExecutor(8) as pool:
        return dict(zip(users, pool.map(make, users), strict=True))


async def poll_rounds(
    spawners: list[Any], counter: RequestCounter, interval: float, rounds: int, spread: bool
) -> list[dict[str, Any]]:
    """Poll every spawner once per interval for ``rounds`` intervals: all at once at the start of each interval, or
    spread evenly over it (as the hub's per-server timers are). Counts requests and CPU per interval."""
    out = []
    for _ in range(rounds):
        began = time.monotonic()
        count0, _ = counter.snapshot()
        cpu0 = time.process_time()
        if spread:
            step = interval / len(spawners)

            async def at(offset: float, spawner: Any, began: float = began) -> Any:
                await asyncio.sleep(max(0.0, began + offset - time.monotonic()))
                return await spawner.poll()

            results = await asyncio.gather(*(at(i * step, s) for i, s in enumerate(spawners)))
        else:
            results = await asyncio.gather(*(s.poll() for s in spawners))
        busy = time.monotonic() - began
        count1, _ = counter.snapshot()
        out.append(
            {
                "requests": count1 - count0,
                "cpu_ms": round((time.process_time() - cpu0) * 1000, 1),
                "wall_ms": round(busy * 1000, 1),
                "not_running": sum(r is not None for r in results),
            }
        )
        await asyncio.sleep(max(0.0, began + interval - time.monotonic()))
    return out


async def poll_benchmark(api: docker.APIClient, prefix: str, n: int, interval: float, rounds: int) -> dict[str, Any]:
    """Spawners made in this process for n running containers, polled like the hub polls them."""
    containers = await asyncio.get_running_loop().run_in_executor(None, make_poll_containers, api, prefix, n)
    logging.getLogger("traitlets").setLevel(logging.ERROR)
    counter = RequestCounter()
    counter.install()
    report: dict[str, Any] = {"servers": n, "interval_s": interval, "rounds": rounds, "spawners": {}}
    try:
        fleets: dict[str, list[Any]] = {}
        for cls in (DockerSpawner, MultiUserSpawner):
            fleet = []
            for user, (name, cid) in containers.items():
                spawner = cls(user=FakeUser(user), poll_interval=max(1, round(interval)))
                if cls is MultiUserSpawner:
                    spawner.poll_view_max_age = interval  # its default is poll_interval; set it exactly
                spawner.load_state({"object_name": name, "object_id": cid})
                fleet.append(spawner)
            fleets[cls.__name__] = fleet
            await asyncio.gather(*(s.poll() for s in fleet))  # warm-up: client, connections, API version
            entry = report["spawners"][cls.__name__] = {}
            for pattern, spread in (("at_once", False), ("spread", True)):
                await asyncio.sleep(interval)  # let a shared view expire, as between two real poll intervals
                _, p0 = counter.snapshot()
                entry[pattern] = await poll_rounds(fleet, counter, interval, rounds, spread)
                _, p1 = counter.snapshot()
                entry[f"{pattern}_requests_by_path"] = {k: v - p0.get(k, 0) for k, v in p1.items() if v - p0.get(k, 0)}

        # Correctness: a container dies between two refreshes; poll() must report it after the next refresh.
        victim_name = next(iter(containers.values()))[0]
        multi, stock = fleets["MultiUserSpawner"], fleets["DockerSpawner"]
        await asyncio.sleep(interval)
        await asyncio.gather(*(s.poll() for s in multi))  # a fresh view, taken while the victim runs
        api.kill(victim_name)
        killed_at = time.monotonic()
        right_after = await multi[0].poll()
        after, results, requests_then = right_after, [], 0
        while after is None and time.monotonic() < killed_at + 3 * interval + 10:
            await asyncio.sleep(interval / 4)
            c0, _ = counter.snapshot()
            results = await asyncio.gather(*(s.poll() for s in multi))
            c1, _ = counter.snapshot()
            after, requests_then = results[0], c1 - c0
        report["after_kill"] = {
            "MultiUserSpawner": {
                "poll_right_after_kill": right_after,
                "poll_after_next_refresh": after,
                "is_int_exit_code": isinstance(after, int) and not isinstance(after, bool),
                "seconds_until_reported": round(time.monotonic() - killed_at, 2),
                "requests_for_that_round_of_polls": requests_then,
                "others_still_running": sum(r is None for r in results[1:]),
                "view_max_age_s": interval,
            },
            "DockerSpawner": {"poll_right_after_kill": await stock[0].poll()},
        }
    finally:
        counter.uninstall()
    for name, entry in report["spawners"].items():
        for pattern in ("at_once", "spread"):
            values = [r["requests"] for r in entry[pattern]]
            cpu = [r["cpu_ms"] for r in entry[pattern]]
            entry[f"{pattern}_requests_median"] = statistics.median(values)
            entry[f"{pattern}_requests_max"] = max(values)
            entry[f"{pattern}_cpu_ms_median"] = statistics.median(cpu)
        log.info("poll %s: %s", name, {k: v for k, v in entry.items() if k.endswith(("median", "max"))})
    return report
