"""The spawners behind a real hub (``docker``, ``multiuser``, ``multiuser-db``, ``multiuser-services``): N users
start at once through the hub's REST API, then stop, timed until the hub reports each server ready (gone)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker

from hubstack import POSTGRES_IMAGE, SINGLEUSER_IMAGE, HubStack

from .containers import container_timeline, prefixed_containers, remove_objects, service_timeline
from .machine import CpuMeter, wait_for_quiet
from .results import Burst
from .scenarios import (
    CPU_LIMIT,
    HOME,
    HUB_LIST_INTERVAL,
    ROUNDS,
    ServerKind,
    burst_timeout,
    run_at_once,
    user_names,
)
from .services import SIDECARS, services_config

# Both spawners are used as they are; the subclass only logs how long start() and stop() took, for the analysis.
TIMING_WRAPPER = """
import time as _bench_time
from {module} import {cls} as _BenchBase


class Bench{cls}(_BenchBase):
    async def start(self):
        began = _bench_time.monotonic()
        try:
            return await super().start()
        finally:
            self.log.info("bench-timing start %s %.3f", self.user.name, _bench_time.monotonic() - began)

    async def stop(self, now=False):
        began = _bench_time.monotonic()
        try:
            return await super().stop(now=now)
        finally:
            self.log.info("bench-timing stop %s %.3f", self.user.name, _bench_time.monotonic() - began)


c.JupyterHub.spawner_class = Bench{cls}
"""

# The hub answers POST/DELETE only once the spawn/stop has finished (instead of "202, still pending" after 10 s),
# so the answer's arrival is the moment the REST API starts reporting the server ready/gone, and nobody has to
# poll the hub (which would cost it CPU while it works).
COMMON_HUB_CONFIG = """
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": {timeout}, "slow_stop_timeout": {timeout}}}
c.JupyterHub.concurrent_spawn_limit = {limit}
c.JupyterHub.active_server_limit = {limit}
c.Spawner.start_timeout = {timeout}
c.Spawner.http_timeout = {timeout}
"""


def hub_config(kind: str, prefix: str, n: int, server: ServerKind, multiuser_extra: str = "") -> str:
    common = COMMON_HUB_CONFIG.format(limit=max(100, 2 * n), timeout=burst_timeout(kind, n))
    if kind == "docker":
        section = "DockerSpawner"
        spawner = f"""
        c.DockerSpawner.remove = True
        c.DockerSpawner.use_internal_ip = True
        c.DockerSpawner.network_name = "bridge"
        c.DockerSpawner.prefix = {prefix!r}
        c.DockerSpawner.volumes = {{{prefix + "-{username}_home"!r}: {HOME!r}}}
        """
        wrapper = TIMING_WRAPPER.format(module="dockerspawner", cls="DockerSpawner")
    else:
        section = "MultiUserSpawner"
        spawner = f"""
        c.MultiUserSpawner.database_enabled = {kind == "multiuser-db"}
        c.MultiUserSpawner.database_image = {POSTGRES_IMAGE!r}
        """
        wrapper = TIMING_WRAPPER.format(module="multiuser_spawner", cls="MultiUserSpawner")
    spawner += server_config(section, server)
    services = services_config() if kind.startswith("multiuser-services") else ""
    extra = f"\n{multiuser_extra}\n" if section == "MultiUserSpawner" and multiuser_extra else ""
    return textwrap.dedent(common) + textwrap.dedent(spawner) + services + extra + wrapper


def server_config(section: str, server: ServerKind) -> str:
    """The single-user server's image, limits and command, the same for every spawner compared."""
    config = f"""
        c.{section}.image = {SINGLEUSER_IMAGE!r}
        c.{section}.cpu_limit = {CPU_LIMIT!r}
        c.{section}.mem_limit = "1G"
        """
    if server.command:
        config += f"""
        c.{section}.cmd = {server.command!r}
        """
    return config


class HubDriver:
    """Fires one request per user at once and times each until the hub has finished it."""

    def __init__(self, hub: HubStack, users: list[str]):
        self.hub = hub
        self.users = users
        self.last_t0 = 0.0

    def servers(self) -> dict[str, dict[str, Any] | None]:
        """Each user's default server as the hub lists it; None for a user without an active server."""
        r = self.hub.request("GET", "/users", params={"state": "active", "limit": 1000})
        r.raise_for_status()
        listed = {u["name"]: (u.get("servers") or {}).get("") for u in r.json()}
        return {user: listed.get(user) for user in self.users}

    def run(self, method: str, done_status: int, goal: Callable[[dict | None], bool], timeout: float) -> dict:
        """``method`` every user's server at once; return user -> seconds from the burst's start until done.

        The hub is configured to answer only once a spawn (stop) has finished, so the 201 (204) arrives when the
        REST API starts reporting the server ready (gone). Should it answer 202 (still pending) all the same, the
        user list is read until it shows ``goal`` met."""
        done: dict[str, float] = {}
        pending: list[str] = []
        refused: dict[str, str] = {}
        lock = threading.Lock()
        deadline = time.monotonic() + timeout

        def fire(i: int, t0: float) -> None:
            user = self.users[i]
            r = self.hub.request(method, f"/users/{user}/server", **({"json": {}} if method == "POST" else {}))
            with lock:
                if r.status_code == done_status:
                    done[user] = round(time.monotonic() - t0, 3)
                elif r.status_code == 202:
                    pending.append(user)
                else:
                    refused[user] = f"{r.status_code} {r.text[:200]}"

        t0 = self.last_t0 = run_at_once(len(self.users), fire, timeout)
        while pending and time.monotonic() < deadline:
            now = time.monotonic()
            servers = self.servers()
            for user in [u for u in pending if goal(servers[u])]:
                done[user] = round(now - t0, 3)
                pending.remove(user)
            time.sleep(HUB_LIST_INTERVAL)
        if refused:
            raise RuntimeError(f"{len(refused)} requests refused, e.g. {next(iter(refused.items()))}")
        missing = [u for u in self.users if u not in done]
        if missing:
            raise TimeoutError(f"{len(missing)} of {len(self.users)} users did not finish within {timeout:.0f} s")
        return done


def hub_burst(
    kind: str,
    prefix: str,
    n: int,
    server: ServerKind,
    workdir: Path,
    client: docker.DockerClient,
    timeout: float,
    multiuser_extra: str = "",
) -> list[Burst]:
    """N users start at once through a new hub, then stop; then the same users once more, on the same hub."""
    users = user_names(n)
    workdir.mkdir(parents=True, exist_ok=True)
    config = hub_config(kind, prefix, n, server, multiuser_extra)
    hub = HubStack(workdir=workdir, prefix=prefix, users={u: [] for u in users}, extra_config=config)
    results = [Burst(kind, server.name, n, returning) for returning in ROUNDS]
    try:
        hub.start(timeout=90)
        wait_for_quiet(30)  # let the hub and its proxy finish starting up
        proxy_pid_file = workdir / "proxy.pid"
        proxy_pids = [int(proxy_pid_file.read_text().strip())] if proxy_pid_file.exists() else []
        pids = {"hub": [hub.process.pid], "proxy": proxy_pids, "bench": [os.getpid()]}
        if kind.endswith(PREPARED_SUFFIX):
            prepare_class(hub, users)
            wait_for_quiet(30)
        for result in results:
            if result.returning:
                wait_for_quiet(30)
            hub_round(result, hub, users, client, prefix, server, pids, timeout)
            if result.error:
                break
    except Exception as e:
        results[0].error = results[0].error or repr(e)
    finally:
        failed = [r for r in results if r.error]
        if failed:
            (workdir / "failure.txt").write_text(f"{failed[0].error}\n\n{hub.log_tail(200)}")
        hub.stop()
        remove_objects(client, prefix)
    if results[0].error and not results[1].error:
        results[1].error = "not measured: the new users' round failed"
    return results


PREPARED_SUFFIX = "-prepared"
CLI = str(Path(sys.executable).with_name("multiuser-spawner"))


def prepare_class(hub: HubStack, users: list[str]) -> None:
    """``multiuser-spawner prepare`` for the class, as its admin would run it the day before (not timed)."""
    env = {**os.environ, "JUPYTERHUB_API_TOKEN": hub.token, "JUPYTERHUB_URL": hub.url}
    config = str(hub.workdir / "jupyterhub_config.py")
    began = time.monotonic()
    result = subprocess.run(
        [CLI, "prepare", "-f", config, "--users", ",".join(users)], capture_output=True, text=True, env=env
    )
    if result.returncode != 0:
        raise RuntimeError(f"prepare failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")
    print(f"  prepared {len(users)} users in {time.monotonic() - began:.1f} s", flush=True)


def hub_round(
    result: Burst,
    hub: HubStack,
    users: list[str],
    client: docker.DockerClient,
    prefix: str,
    server: ServerKind,
    pids: dict[str, list[int]],
    timeout: float,
) -> None:
    driver = HubDriver(hub, users)
    log_start = hub.log_path.stat().st_size
    meter = CpuMeter(client.api, prefix, pids)
    meter.start()
    try:
        result.ready = driver.run("POST", 201, lambda model: bool(model and model.get("ready")), timeout)
    except Exception as e:
        result.error = f"start: {e}"
    result.cpu = meter.stop()
    timelines = {u: container_timeline(client.api, f"{prefix}-{u}", driver.last_t0, server.up_marker) for u in users}
    for u in users:
        for service in SIDECARS.get(result.scenario, ()):
            timelines[u].update(service_timeline(client.api, service, prefix, u, driver.last_t0))
    try:
        result.stopped = driver.run("DELETE", 204, lambda model: model is None, 120 + 5 * len(users))
    except Exception as e:
        result.error = result.error or f"stop: {e}"
    leftovers = [
        name
        for c in prefixed_containers(client.api, prefix)
        for name in c["Names"]
        if name.lstrip("/").startswith(f"{prefix}-")
    ]
    if leftovers and not result.error:
        result.error = f"containers left after stop: {leftovers[:3]}"
    with hub.log_path.open("rb") as log_file:
        log_file.seek(log_start)
        result.phases = hub_phases(log_file.read().decode("utf-8", "replace"))
    for user, timeline in timelines.items():
        result.phases.setdefault(user, {}).update(timeline)


def hub_phases(hub_log: str) -> dict[str, dict[str, float]]:
    """Per user, from the hub's log: how long Spawner.start() and Spawner.stop() took, and the hub's whole spawn
    ("took X seconds to start": start() plus the hub's wait for the server to answer HTTP)."""
    phases: dict[str, dict[str, float]] = {}
    for user, seconds in re.findall(r"User (\S+) took ([\d.]+) seconds to start", hub_log):
        phases.setdefault(user, {})["hub_spawn"] = float(seconds)
    for what, user, seconds in re.findall(r"bench-timing (start|stop) (\S+) ([\d.]+)", hub_log):
        phases.setdefault(user, {})[f"spawner_{what}"] = float(seconds)
    return phases
