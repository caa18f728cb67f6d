"""Start-burst, stop and polling benchmark: raw Docker, DockerSpawner and MultiUserSpawner on this machine.

    .venv/bin/python benchmarks/bench.py [--sizes 1,10,20] [--json out.json] [--poll-servers 100]

For each burst size N and each server kind (``jupyter``: the image's own ``jupyterhub-singleuser``; ``light``: a
tiny HTTP server from the same image, which takes the CPU-heavy Jupyter start-up out of the picture), one run
measures:

- ``floor``: N containers started at once with docker-py (same image, command, environment, limits and a named
  volume each), ready when the server answers the request the hub itself makes to decide a server is up;
- ``docker``: stock DockerSpawner behind a real hub: N ``POST /users/{name}/server`` at once, ready when the hub
  reports the server ready; then N ``DELETE`` at once, done when the hub reports each server gone;
- ``multiuser`` and ``multiuser-db``: the same with MultiUserSpawner, without and with its per-user database;

once per N, ``db-floor``: N database containers started at once with docker-py, ready when ``pg_isready`` succeeds;
and what ``poll()`` costs with many running servers (Docker requests and CPU per poll interval).

It prints the results, checks the targets and optionally writes every number as JSON. Every Docker object it makes
is named ``bench-<run id>-...`` and removed at the end, whatever happens. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import re
import secrets
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import docker  # noqa: E402
import jupyterhub  # noqa: E402
from dockerspawner import DockerSpawner  # noqa: E402

from hubstack import POSTGRES_IMAGE, SINGLEUSER_IMAGE, HubStack, cleanup_prefix, docker0_address, free_port  # noqa: E402
from multiuser_spawner import MultiUserSpawner, names  # noqa: E402

CPU_LIMIT = 1.0
MEM_LIMIT = 1024**3  # "1G" as the hub's ByteSpecification reads it
SERVER_PORT = 8888
HOME = "/home/jovyan"
NOTEBOOK_LIMITS = {"mem_limit": MEM_LIMIT, "cpu_period": 100_000, "cpu_quota": int(CPU_LIMIT * 100_000)}
PG_DATA = "/var/lib/postgresql/data"
POSTGRES_UP_MARKER = "database system is ready to accept connections"
HTTP_CHECK_INTERVAL = 0.05  # the floors' readiness probe period (the hub's own backoff starts at up to 0.2 s)
HUB_LIST_INTERVAL = 0.25  # how often the hub's user list is read, should the hub answer a request before finishing
SETTLE_SECONDS = 3.0  # pause after a scenario's clean-up, before the next one
HUB_KINDS = ("docker", "multiuser", "multiuser-db")
FLOOR_KINDS = ("floor", "pair-floor")
ALL_SCENARIOS = (*FLOOR_KINDS, "db-floor", *HUB_KINDS, "poll")
# A class logs in on day one with new users (new volumes: new homes, databases to initialise), and on every later
# day as returning users, whose volumes exist. Each scenario measures both, in that order, on the same volumes.
ROUNDS = (False, True)  # returning?
RETURNING_SUFFIX = ", returning"
SHORT_NAMES = {
    "floor": "fl",
    "pair-floor": "pf",
    "db-floor": "pg",
    "docker": "ds",
    "multiuser": "mu",
    "multiuser-db": "db",
}


@dataclass(frozen=True)
class ServerKind:
    """What runs in the notebook container, and the log line that says it has begun serving."""

    name: str
    command: list[str] | None  # None: the image's own command
    up_marker: str


SERVER_KINDS = {
    "jupyter": ServerKind("jupyter", None, " is running at"),
    # The hub's readiness request gets a 404 from it, which counts as "up" (any answer below 500 does). The shell
    # ends on SIGTERM even as PID 1 without an init, like the Jupyter server does; the hub's arguments land in its
    # positional parameters, unused.
    "light": ServerKind(
        "light",
        ["sh", "-c", f'trap "exit 0" TERM; python3 -u -m http.server {SERVER_PORT} & wait', "light-server"],
        "Serving HTTP on",
    ),
}

log = logging.getLogger("bench")


# -- results ---------------------------------------------------------------------------------------------------------


@dataclass
class Burst:
    """One scenario at one size. Times are seconds from the moment the burst's requests were released."""

    scenario: str
    server: str  # a SERVER_KINDS key, or "postgres" for db-floor
    n: int
    returning: bool = False  # the same users once more: their volumes (files, databases) exist already
    ready: dict[str, float] = field(default_factory=dict)  # user -> time until ready
    stopped: dict[str, float] = field(default_factory=dict)  # user -> time until stopped (from the stop burst)
    phases: dict[str, dict[str, float]] = field(default_factory=dict)  # user -> phase -> seconds
    cpu: dict[str, Any] = field(default_factory=dict)  # CPU seconds used during the start burst, by whom
    error: str = ""
    quiet_wait: float = 0.0  # seconds waited for the machine to be quiet before this attempt
    disturbed: bool = False  # other work used a noticeable share of the machine during the start burst
    attempts: int = 1
    repeat_bursts: list[float] = field(default_factory=list)  # burst times of every undisturbed attempt
    discarded: list[dict[str, Any]] = field(default_factory=list)  # the other attempts

    @property
    def label(self) -> str:
        return self.scenario + RETURNING_SUFFIX if self.returning else self.scenario

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.server, self.label, self.n)

    @property
    def ok(self) -> bool:
        return not self.error and len(self.ready) == self.n

    @property
    def median_ready(self) -> float | None:
        return statistics.median(self.ready.values()) if self.ready else None

    @property
    def max_ready(self) -> float | None:
        return max(self.ready.values()) if self.ready else None

    @property
    def burst(self) -> float | None:
        """First request to last ready; None unless every server got ready."""
        return self.max_ready if self.ok else None

    @property
    def stop_all(self) -> float | None:
        return max(self.stopped.values()) if self.stopped and len(self.stopped) == self.n else None

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            label=self.label,
            ok=self.ok,
            median_ready=self.median_ready,
            max_ready=self.max_ready,
            burst=self.burst,
            stop_all=self.stop_all,
        )
        return out


def remove_objects(client: docker.DockerClient, prefix: str, attempts: int = 5) -> None:
    """The harness's clean-up of everything named ``prefix-*``, retried: on a shared engine another user's
    container may vanish between its listing and its inspection."""
    for attempt in range(attempts):
        try:
            cleanup_prefix(client, prefix)
            return
        except docker.errors.NotFound:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)


def remove_containers(api: docker.APIClient, prefix: str) -> None:
    """Remove every container and network named ``prefix-*`` (volumes stay), ignoring ones that vanish meanwhile."""
    for container in api.containers(all=True, filters={"name": f"{prefix}-"}):
        if any(name.lstrip("/").startswith(f"{prefix}-") for name in container["Names"]):
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_container(container["Id"], v=True, force=True)
    for network in api.networks(names=[f"{prefix}-"]):
        if network["Name"].startswith(f"{prefix}-"):
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_network(network["Id"])


def user_names(n: int) -> list[str]:
    width = max(2, len(str(n)))
    return [f"u{i:0{width}d}" for i in range(1, n + 1)]


def run_at_once(n: int, work: Callable[[int, float], None], timeout: float) -> float:
    """Run ``work(i, t0)`` for i in range(n) in n threads released together; return t0, their common start."""
    barrier = threading.Barrier(n + 1)
    t0_box: list[float] = []
    errors: list[BaseException] = []

    def body(i: int) -> None:
        barrier.wait(timeout=60)
        try:
            work(i, t0_box[0])
        except BaseException as e:  # re-raised below, in the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    t0_box.append(time.monotonic())
    barrier.wait(timeout=60)
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        raise TimeoutError(f"{sum(t.is_alive() for t in threads)} of {n} workers still busy after {timeout:.0f} s")
    if errors:
        raise errors[0]
    return t0_box[0]


# -- CPU accounting ------------------------------------------------------------------------------------------------
#
# The machine may be shared: other work during a burst slows it down. So each burst accounts for the CPU every
# process used while it ran, tells the benchmark's own (hub, proxy, engine, its containers, this script) from
# everyone else's, and is measured again when someone else used a noticeable share of the machine.

TICKS = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1
ENGINE_COMMANDS = ("dockerd", "containerd", "containerd-shim", "runc", "docker-proxy")
CONTAINER_IN_CGROUP = re.compile(r"docker[/-]([0-9a-f]{64})")


@dataclass(frozen=True)
class Proc:
    started: int  # clock ticks after boot: tells a reused pid from the process seen before
    cpu: float  # user + system seconds
    children: float  # user + system seconds of its children that ended and were waited for
    comm: str
    kernel: bool
    container: str  # the id of the Docker container it runs in, or ""


def process_table() -> dict[int, Proc]:
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cgroup = (entry / "cgroup").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        container = CONTAINER_IN_CGROUP.search(cgroup)
        table[int(entry.name)] = Proc(
            started=int(fields[19]),
            cpu=(int(fields[11]) + int(fields[12])) / TICKS,
            children=(int(fields[13]) + int(fields[14])) / TICKS,
            comm=stat[stat.index("(") + 1 : stat.rindex(")")],
            kernel=fields[1] in ("0", "2") and entry.name != "1",
            container=container.group(1) if container else "",
        )
    return table


def system_busy() -> float:
    """CPU seconds all cores spent working since boot: user, nice, system, irq and softirq time (not idle, iowait,
    nor the time a hypervisor gave to other machines)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (values[0] + values[1] + values[2] + values[5] + values[6]) / TICKS


def system_steal() -> float:
    """CPU seconds the hypervisor gave to others while this machine wanted to run (0 on bare metal)."""
    values = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return int(values[7]) / TICKS if len(values) > 7 else 0.0


CONTAINERS_CPUACCT = Path("/sys/fs/cgroup/cpuacct/docker/cpuacct.usage")  # cgroup v1: every container, ever


def all_containers_cpu() -> float | None:
    """CPU seconds used by every container's processes since the engine started, including containers and
    processes that are gone (None where the engine's cgroup is not there to read)."""
    try:
        return int(CONTAINERS_CPUACCT.read_text()) / 1e9
    except (OSError, ValueError):
        return None


def wait_for_quiet(limit: float, busy_share: float = 0.15, window: float = 2.0) -> float:
    """Wait (at most ``limit`` seconds) until the machine has been less than ``busy_share`` busy for ``window``
    seconds; return how long that took (``limit`` when it never got quiet)."""
    began = time.monotonic()
    while time.monotonic() - began < limit:
        before = system_busy()
        time.sleep(window)
        if (system_busy() - before) / (window * NCPU) < busy_share:
            return round(time.monotonic() - began, 1)
    return limit


class CpuMeter:
    """CPU used between ``start()`` and ``stop()``: by named groups of the benchmark's processes, by the Docker
    engine (with the helpers it ran and waited for: runc, iptables), by the benchmark's running containers (names
    starting with ``prefix-``), by all containers (anyone's, including processes and containers that ended: a
    spawner's helper containers, a database's initialisation), by kernel threads, and by everything else ("other":
    work that is not the benchmark's and only disturbs it)."""

    def __init__(self, api: docker.APIClient, prefix: str, groups: dict[str, list[int]]):
        self.api = api
        self.prefix = prefix
        self.groups = groups
        self._before: dict[int, Proc] = {}
        self._busy = 0.0
        self._steal = 0.0
        self._containers_all: float | None = None
        self._began = 0.0

    def start(self) -> None:
        self._before = process_table()
        self._containers_all = all_containers_cpu()
        self._busy = system_busy()
        self._steal = system_steal()
        self._began = time.monotonic()

    def stop(self) -> dict[str, Any]:
        after = process_table()
        busy = system_busy() - self._busy
        steal = system_steal() - self._steal
        wall = time.monotonic() - self._began
        ours = {
            c["Id"]
            for c in self.api.containers(all=True, filters={"name": f"{self.prefix}-"})
            if any(name.lstrip("/").startswith(f"{self.prefix}-") for name in c["Names"])
        }
        group_of = {pid: group for group, pids in self.groups.items() for pid in pids}
        used = dict.fromkeys([*self.groups, "docker_engine", "containers", "kernel", "other"], 0.0)
        others: dict[str, float] = {}
        for pid, proc in after.items():
            before = self._before.get(pid)
            seen = before is not None and before.started == proc.started
            delta = proc.cpu - before.cpu if seen else proc.cpu
            if pid in group_of:
                used[group_of[pid]] += delta
            elif proc.container in ours and proc.container:
                used["containers"] += delta
            elif proc.comm.startswith(ENGINE_COMMANDS) and not proc.container:
                used["docker_engine"] += delta + (proc.children - before.children if seen else proc.children)
            elif proc.kernel:
                used["kernel"] += delta
            elif delta > 0:
                used["other"] += delta
                others[proc.comm] = others.get(proc.comm, 0.0) + delta
        result: dict[str, Any] = {name: round(value, 3) for name, value in used.items()}
        containers_all = all_containers_cpu()
        if containers_all is not None and self._containers_all is not None:
            result["containers_all"] = round(containers_all - self._containers_all, 3)
        result.update(
            machine=round(busy, 3),
            steal=round(steal, 3),
            wall=round(wall, 3),
            machine_utilisation=round(busy / (wall * NCPU), 3) if wall else 0.0,
            other_top={comm: round(v, 2) for comm, v in sorted(others.items(), key=lambda kv: -kv[1])[:5]},
        )
        return result


def disturbed(cpu: dict[str, Any]) -> bool:
    """Whether work that is not the benchmark's used a noticeable share of the machine during a burst (on this
    machine, or, as CPU time its hypervisor gave to others, on the host it runs on)."""
    allowance = max(0.3, 0.05 * cpu.get("wall", 0.0) * NCPU)
    return cpu.get("other", 0.0) > allowance or cpu.get("steal", 0.0) > allowance


# -- container timelines -------------------------------------------------------------------------------------------


def docker_time(stamp: str) -> float:
    """An engine timestamp (RFC 3339, nanoseconds) as a Unix time."""
    date, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(date).replace(tzinfo=timezone.utc).timestamp() + float(f"0.{fraction or 0}")


def container_timeline(
    api: docker.APIClient,
    name: str,
    t0: float,
    up_marker: str,
    running: str = "container_running",
    up: str = "server_up",
    last: bool = False,
) -> dict[str, float]:
    """Seconds after ``t0`` (a ``time.monotonic()`` value) when the engine had the container running (key
    ``running``) and when it logged ``up_marker`` (key ``up``: the line its server prints as it begins to serve;
    the last such line when ``last``). Read after the burst, at no cost to it."""
    t0_unix = t0 + (time.time() - time.monotonic())
    timeline: dict[str, float] = {}
    try:
        info = api.inspect_container(name)
        logs = api.logs(name, timestamps=True, stdout=True, stderr=True).decode("utf-8", "replace")
    except docker.errors.APIError:
        return timeline
    timeline[running] = round(docker_time(info["State"]["StartedAt"]) - t0_unix, 3)
    for line in logs.splitlines():
        if up_marker in line:
            timeline[up] = round(docker_time(line.split(" ", 1)[0]) - t0_unix, 3)
            if not last:
                break
    return timeline


def database_timeline(api: docker.APIClient, name: str, t0: float) -> dict[str, float]:
    # A first start logs the marker twice: the image's setup runs a server on a local socket, then the real one.
    return container_timeline(api, name, t0, POSTGRES_UP_MARKER, "db_running", "db_up", last=True)


# -- the raw-Docker floor ----------------------------------------------------------------------------------------


class HubStub:
    """What a single-user server asks of its hub while it starts, and nothing more: ``GET /hub/api`` (its version
    check, without which it exits) and ``POST .../activity``. Listens on the docker0 address, like the real hub."""

    def __init__(self) -> None:
        version = jupyterhub.__version__

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = json.dumps({"version": version}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-JupyterHub-Version", version)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._answer()

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer()

            def log_message(self, *args: Any) -> None:
                pass

        self.ip = docker0_address()
        self.port = free_port()
        self.server = ThreadingHTTPServer((self.ip, self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def api_url(self) -> str:
        return f"http://{self.ip}:{self.port}/hub/api"


def singleuser_environment(user: str, hub_api_url: str) -> dict[str, str]:
    """The environment a hub gives a single-user server, as far as its start-up reads it."""
    token = secrets.token_hex(16)
    prefix = f"/user/{user}/"
    return {
        "JUPYTERHUB_API_TOKEN": token,
        "JPY_API_TOKEN": token,
        "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{user}",
        "JUPYTERHUB_USER": user,
        "JUPYTERHUB_SERVER_NAME": "",
        "JUPYTERHUB_API_URL": hub_api_url,
        "JUPYTERHUB_ACTIVITY_URL": f"{hub_api_url}/users/{user}/activity",
        "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_HOST": "",
        "JUPYTERHUB_SERVICE_PREFIX": prefix,
        "JUPYTERHUB_SERVICE_URL": f"http://0.0.0.0:{SERVER_PORT}{prefix}",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
        "JUPYTER_IMAGE_SPEC": SINGLEUSER_IMAGE,
    }


def postgres_ready(ip: str, port: int = 5432) -> bool:
    """pg_isready's rule, from outside the container and at no cost to the engine: the server answers a startup
    packet with anything but "the database system is starting up" (SQLSTATE 57P03). During its first-run setup the
    image's server listens on its unix socket only, so this also waits for that setup to finish."""
    body = b"user\0pg_isready\0database\0pg_isready\0\0"
    try:
        with socket.create_connection((ip, port), timeout=1) as sock:
            sock.settimeout(2)
            sock.sendall(struct.pack("!ii", 8 + len(body), 3 << 16) + body)
            answer = sock.recv(4096)
    except OSError:
        return False
    if not answer:
        return False
    return not (answer[:1] == b"E" and b"C57P03" in answer)


def server_answers(ip: str, port: int, path: str) -> bool:
    """The hub's readiness rule: any HTTP answer below 500. A bare socket, so that probing twenty servers every
    50 ms costs next to no CPU (with an HTTP client library it took a noticeable share of this machine)."""
    try:
        with socket.create_connection((ip, port), timeout=2) as sock:
            sock.settimeout(10)  # a server that accepts before it serves answers once it serves
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\n\r\n".encode())
            status_line = sock.recv(64).split(None, 2)
    except OSError:
        return False
    return len(status_line) >= 2 and status_line[1].isdigit() and int(status_line[1]) < 500


def floor_burst(
    api: docker.APIClient, prefix: str, n: int, server: ServerKind, timeout: float, pairs: bool = False
) -> list[Burst]:
    """N notebook containers at once with docker-py: create, start, read the IP, probe HTTP until it answers (the
    URL the hub probes); then stop and remove them all at once. Once for new users, once more on their volumes.

    With ``pairs``, each user gets what MultiUserSpawner makes with the database on: a new bridge network, a
    database container on it (its data on a volume) and the notebook container on it; ready when both are."""
    with HubStub() as stub:
        return [floor_round(api, prefix, n, server, timeout, stub, returning, pairs) for returning in ROUNDS]


def floor_round(
    api: docker.APIClient,
    prefix: str,
    n: int,
    server: ServerKind,
    timeout: float,
    stub: HubStub,
    returning: bool,
    pairs: bool,
) -> Burst:
    result = Burst("pair-floor" if pairs else "floor", server.name, n, returning)
    users = user_names(n)
    ids: dict[str, list[str]] = {}  # user -> their containers, notebook last
    meter = CpuMeter(api, prefix, {"bench": [os.getpid()]})

    def start_one(i: int, t0: float) -> None:
        user = users[i]
        network = f"{prefix}-{user}_net" if pairs else "bridge"
        ids[user] = []
        if pairs:
            api.create_network(network, driver="bridge", check_duplicate=True)
            db_ip = start_container(
                user,
                POSTGRES_IMAGE,
                name=f"{prefix}-{user}_db",
                environment={"POSTGRES_USER": "jupyter", "POSTGRES_PASSWORD": secrets.token_urlsafe(24)},
                binds={f"{prefix}-{user}_db": {"bind": PG_DATA, "mode": "rw"}},
                network=network,
                aliases=["db"],
            )
        ip = start_container(
            user,
            SINGLEUSER_IMAGE,
            name=f"{prefix}-{user}",
            command=server.command,
            environment=singleuser_environment(user, stub.api_url),
            binds={f"{prefix}-{user}_home": {"bind": HOME, "mode": "rw"}},
            network=network,
            limits=True,
        )
        waiting = [lambda: server_answers(ip, SERVER_PORT, f"/user/{user}/api")]
        if pairs:
            waiting.append(lambda: postgres_ready(db_ip))
        while waiting:
            waiting = [check for check in waiting if not check()]
            if waiting and time.monotonic() > t0 + timeout:
                raise TimeoutError(f"{user}'s server did not answer within {timeout:.0f} s")
            time.sleep(HTTP_CHECK_INTERVAL if waiting else 0)
        result.ready[user] = round(time.monotonic() - t0, 3)

    def start_container(
        user: str,
        image: str,
        *,
        network: str,
        binds: dict,
        aliases: list[str] | None = None,
        limits: bool = False,
        **create: Any,
    ) -> str:
        host_config = api.create_host_config(
            binds=binds,
            network_mode=network,
            init=True,  # `docker run --init`: a stop is the server's own shutdown, never a 10 s grace period
            **(NOTEBOOK_LIMITS if limits else {}),
        )
        networking = api.create_networking_config({network: api.create_endpoint_config(aliases=aliases)})
        created = api.create_container(
            image, ports=[SERVER_PORT], host_config=host_config, networking_config=networking, **create
        )
        ids[user].append(created["Id"])
        api.start(created["Id"])
        return api.inspect_container(created["Id"])["NetworkSettings"]["Networks"][network]["IPAddress"]

    meter.start()
    try:
        t0 = run_at_once(n, start_one, timeout + 30)
        result.cpu = meter.stop()
        result.phases = {u: container_timeline(api, f"{prefix}-{u}", t0, server.up_marker) for u in users}
        if pairs:
            for u in users:
                result.phases[u].update(database_timeline(api, f"{prefix}-{u}_db", t0))
    except Exception as e:
        result.error = f"start: {e!r}"

    def stop_one(i: int, t0: float) -> None:
        user = users[i]
        for container in ids[user]:
            api.stop(container, timeout=10)  # docker stop's (and both spawners') default grace period
            api.remove_container(container, v=True)  # anonymous volumes only: named ones stay
        if pairs:
            api.remove_network(f"{prefix}-{user}_net")
        result.stopped[user] = round(time.monotonic() - t0, 3)

    if not result.error:
        try:
            run_at_once(n, stop_one, 120 + 5 * n)
        except Exception as e:
            result.error = f"stop: {e!r}"
    remove_containers(api, prefix)  # whatever a failed round left, so the next one can reuse the names
    return result


def database_floor_burst(api: docker.APIClient, prefix: str, n: int, timeout: float) -> list[Burst]:
    """N database containers at once with docker-py, each on a new data volume, ready when pg_isready's rule says
    so; removed at once (the volumes stay). Then once more on the same volumes, which need no initialisation."""
    return [database_floor_round(api, prefix, n, timeout, returning) for returning in ROUNDS]


def database_floor_round(api: docker.APIClient, prefix: str, n: int, timeout: float, returning: bool) -> Burst:
    result = Burst("db-floor", "postgres", n, returning)
    users = user_names(n)
    ids: dict[str, str] = {}
    meter = CpuMeter(api, prefix, {"bench": [os.getpid()]})

    def start_one(i: int, t0: float) -> None:
        user = users[i]
        created = api.create_container(
            POSTGRES_IMAGE,
            name=f"{prefix}-{user}_db",
            # an existing cluster keeps the password it was made with; this one is then ignored
            environment={"POSTGRES_USER": "jupyter", "POSTGRES_PASSWORD": secrets.token_urlsafe(24)},
            host_config=api.create_host_config(
                binds={f"{prefix}-{user}_db": {"bind": PG_DATA, "mode": "rw"}}, network_mode="bridge", init=True
            ),
        )
        ids[user] = created["Id"]
        api.start(created["Id"])
        ip = api.inspect_container(created["Id"])["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
        while not postgres_ready(ip):
            if time.monotonic() > t0 + timeout:
                raise TimeoutError(f"{user}'s database was not ready within {timeout:.0f} s")
            time.sleep(HTTP_CHECK_INTERVAL)
        result.ready[user] = round(time.monotonic() - t0, 3)

    meter.start()
    try:
        t0 = run_at_once(n, start_one, timeout + 30)
        result.cpu = meter.stop()
        result.phases = {u: database_timeline(api, f"{prefix}-{u}_db", t0) for u in users}
    except Exception as e:
        result.error = f"start: {e!r}"
        result.cpu = meter.stop()

    def stop_one(i: int, t0: float) -> None:
        user = users[i]
        if user in ids:
            api.stop(ids[user], timeout=10)  # a clean shutdown, so the next round finds a consistent cluster
            api.remove_container(ids[user], v=True)
            result.stopped[user] = round(time.monotonic() - t0, 3)

    try:
        run_at_once(n, stop_one, 120 + 5 * n)
    except Exception as e:
        result.error = result.error or f"stop: {e!r}"
    remove_containers(api, prefix)
    return result


# -- spawners behind a real hub ------------------------------------------------------------------------------------

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
    common = COMMON_HUB_CONFIG.format(limit=max(100, 2 * n), timeout=int(120 + 10 * n))
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
    spawner += f"""
        c.{section}.image = {SINGLEUSER_IMAGE!r}
        c.{section}.cpu_limit = {CPU_LIMIT!r}
        c.{section}.mem_limit = "1G"
        """
    if server.command:
        spawner += f"""
        c.{section}.cmd = {server.command!r}
        """
    extra = f"\n{multiuser_extra}\n" if section == "MultiUserSpawner" and multiuser_extra else ""
    return textwrap.dedent(common) + textwrap.dedent(spawner) + extra + wrapper


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
    if result.scenario == "multiuser-db":
        for u in users:
            timelines[u].update(database_timeline(client.api, f"{prefix}-{u}_db", driver.last_t0))
    try:
        result.stopped = driver.run("DELETE", 204, lambda model: model is None, 120 + 5 * len(users))
    except Exception as e:
        result.error = result.error or f"stop: {e}"
    leftovers = [
        name
        for c in client.api.containers(all=True, filters={"name": f"{prefix}-"})
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


# -- polling ---------------------------------------------------------------------------------------------------------


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
            labels=names.labels(names.ROLE_NOTEBOOK, user, ""),
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


# -- targets and tables --------------------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def evaluate(
    bursts: dict[tuple[str, str, int], Burst], poll: dict[str, Any] | None, sizes: list[int], servers: list[str]
) -> list[dict]:
    """The issue's targets. They are about the real single-user server (``jupyter``); the same checks on the light
    server are reported too, marked as diagnostics."""
    targets: list[dict] = []

    def target(
        name: str, server: str, measured: float | None, limit: float | None, unit: str = "x", diagnostic: bool = False
    ) -> None:
        met = None if measured is None or limit is None else measured <= limit
        targets.append(
            {
                "target": name,
                "server": server,
                "issue": (server == "jupyter" or server == "-") and not diagnostic,
                "measured": measured,
                "limit": round(limit, 3) if limit is not None else None,
                "unit": unit,
                "met": met,
            }
        )

    for server in servers:
        for n in sizes:
            for returning in ROUNDS:
                suffix = RETURNING_SUFFIX if returning else ""
                floor = bursts.get((server, "floor" + suffix, n))
                db_floor = bursts.get(("postgres", "db-floor" + suffix, n))
                stock, multi, multi_db = (bursts.get((server, kind + suffix, n)) for kind in HUB_KINDS)
                floor_time = floor.burst if floor else None
                who = " (returning users)" if returning else ""
                if multi:
                    label = "single spawn" if n == 1 else f"burst of {n}"
                    target(f"{label}{who}: multiuser / floor", server, ratio(multi.burst, floor_time), 1.15)
                    if n > 1:
                        target(
                            f"burst of {n}{who}: multiuser / DockerSpawner",
                            server,
                            ratio(multi.burst, stock and stock.burst),
                            0.6,
                        )
                        target(
                            f"stop of {n}{who}: multiuser / floor",
                            server,
                            ratio(multi.stop_all, floor and floor.stop_all),
                            1.2,
                        )
                if multi_db:
                    limit = floor_time + db_floor.burst if floor_time and db_floor and db_floor.burst else None
                    target(
                        f"database on, N={n}{who}: burst (s) <= floor + database's own",
                        server,
                        multi_db.burst,
                        limit,
                        "s",
                    )
                    pair_floor = bursts.get((server, "pair-floor" + suffix, n))
                    target(
                        f"database on, N={n}{who}: multiuser-db / pair floor",
                        server,
                        ratio(multi_db.burst, pair_floor and pair_floor.burst),
                        1.15,
                        diagnostic=True,
                    )
    if poll:
        entry = poll["spawners"].get("MultiUserSpawner")
        worst = max(entry["at_once_requests_max"], entry["spread_requests_max"]) if entry else None
        target(f"polling {poll['servers']} servers: Docker requests per interval", "-", worst, 2, "requests")
    return targets


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ordered(bursts: dict[tuple[str, str, int], Burst], sizes: list[int], servers: list[str]) -> list[Burst]:
    out = []
    for n in sizes:
        for suffix in ("", RETURNING_SUFFIX):
            if ("postgres", "db-floor" + suffix, n) in bursts:
                out.append(bursts[("postgres", "db-floor" + suffix, n)])
            for server in servers:
                keys = [(server, s + suffix, n) for s in (*FLOOR_KINDS, *HUB_KINDS)]
                out.extend(bursts[key] for key in keys if key in bursts)
    return out


def results_table(bursts: dict[tuple[str, str, int], Burst], sizes: list[int], servers: list[str]) -> str:
    lines = [
        "| server | scenario | N | median ready (s) | max ready (s) | burst (s) | stop all (s) "
        "| burst / floor | burst / docker | stop / floor |",
        "|" + "---|" * 10,
    ]
    for b in ordered(bursts, sizes, servers):
        suffix = RETURNING_SUFFIX if b.returning else ""
        floor, stock = (bursts.get((b.server, kind + suffix, b.n)) for kind in ("floor", "docker"))
        hub_row = b.scenario in HUB_KINDS
        vs_floor = ratio(b.burst, floor and floor.burst) if hub_row else None
        vs_docker = ratio(b.burst, stock and stock.burst) if hub_row and b.scenario != "docker" else None
        stop_vs = ratio(b.stop_all, floor and floor.stop_all) if hub_row else None
        stop = "-" if b.scenario == "db-floor" else fmt(b.stop_all)
        name = b.label + (" *" if b.disturbed else "") + (f" (FAILED: {b.error[:80]})" if b.error else "")
        burst = fmt(b.burst)
        if len(b.repeat_bursts) > 1:
            burst += f" ({fmt(min(b.repeat_bursts))}-{fmt(max(b.repeat_bursts))})"
        lines.append(
            f"| {b.server} | {name} | {b.n} | {fmt(b.median_ready)} | {fmt(b.max_ready)} | {burst} | {stop} "
            f"| {fmt(vs_floor)} | {fmt(vs_docker)} | {fmt(stop_vs)} |"
        )
    return "\n".join(lines)


def median_cell(values: list[float]) -> str:
    """A table cell: the median of ``values``, or "-" when there are none."""
    return fmt(statistics.median(values)) if values else "-"


def phase_table(bursts: dict[tuple[str, str, int], Burst], sizes: list[int], servers: list[str]) -> str:
    """Where the time goes: medians over one burst's users, in seconds since the burst's requests went out."""
    lines = [
        "| server | scenario | N | container running | server up | ready | up → ready | start() | stop() "
        "| CPU s: containers (all) / hub / engine / other | machine busy |",
        "|" + "---|" * 11,
    ]

    for b in ordered(bursts, sizes, servers):
        if b.scenario == "db-floor" or not b.phases:
            continue
        phases = b.phases.values()
        lag = [b.ready[u] - p["server_up"] for u, p in b.phases.items() if "server_up" in p and u in b.ready]
        containers = fmt(b.cpu.get("containers"), 1)
        if "containers_all" in b.cpu:
            containers += f" ({fmt(b.cpu['containers_all'], 1)})"
        cpu = " / ".join([containers, *(fmt(b.cpu.get(k), 1) for k in ("hub", "docker_engine", "other"))])
        busy = b.cpu.get("machine_utilisation")
        cells = [
            median_cell([p["container_running"] for p in phases if "container_running" in p]),
            median_cell([p["server_up"] for p in phases if "server_up" in p]),
            fmt(b.median_ready),
            median_cell(lag),
            median_cell([p["spawner_start"] for p in phases if "spawner_start" in p]),
            median_cell([p["spawner_stop"] for p in phases if "spawner_stop" in p]),
            cpu,
            f"{fmt(busy and busy * 100, 0)}%",
        ]
        lines.append(f"| {b.server} | {b.label} | {b.n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def database_table(bursts: dict[tuple[str, str, int], Burst], sizes: list[int], servers: list[str]) -> str:
    """The database's own timeline, raw and beside a notebook: medians in seconds since the burst's requests."""
    lines = [
        "| server | scenario | N | database container running | database up | notebook server up | ready "
        "| ready - last of both up |",
        "|" + "---|" * 8,
    ]

    for b in ordered(bursts, sizes, servers):
        if b.scenario not in ("db-floor", "pair-floor", "multiuser-db"):
            continue
        phases = b.phases.values()
        lag = [
            b.ready[u] - max(p.get("db_up", 0.0), p.get("server_up", 0.0))
            for u, p in b.phases.items()
            if "db_up" in p and u in b.ready
        ]
        cells = [
            median_cell([p["db_running"] for p in phases if "db_running" in p]),
            median_cell([p["db_up"] for p in phases if "db_up" in p]),
            median_cell([p["server_up"] for p in phases if "server_up" in p]),
            fmt(b.median_ready),
            median_cell(lag),
        ]
        lines.append(f"| {b.server} | {b.label} | {b.n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def target_table(targets: list[dict]) -> str:
    lines = ["| target | server | measured | limit | result |", "|---|---|---|---|---|"]
    for t in targets:
        unit = "" if t["unit"] == "x" else f" {t['unit']}"
        result = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        if not t["issue"]:
            result += " (diagnostic)"
        lines.append(
            f"| {t['target']} | {t['server']} | {fmt(t['measured'])}{unit} | {fmt(t['limit'])}{unit} | {result} |"
        )
    return "\n".join(lines)


def poll_table(poll: dict[str, Any]) -> str:
    lines = [
        "| spawner | polls at once: requests / interval | CPU ms / interval "
        "| polls spread over the interval: requests / interval | CPU ms / interval |",
        "|---|---|---|---|---|",
    ]
    for name, e in poll["spawners"].items():
        cells = [
            f"{e[f'{p}_requests_median']:g} (max {e[f'{p}_requests_max']}) | {e[f'{p}_cpu_ms_median']:g}"
            for p in ("at_once", "spread")
        ]
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


# -- machine, run ------------------------------------------------------------------------------------------------


def source_version() -> str:
    """The project's commit, with ``-dirty`` when multiuser_spawner/ has changes not committed."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "multiuser_spawner"], capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def machine_info(client: docker.DockerClient) -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text()
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))
    cpu_model = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    version, info = client.version(), client.info()
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "nproc": NCPU,
        "cpu_model": cpu_model.group(1).strip() if cpu_model else "",
        "memory_gib": round(mem_kb / 1024**2, 1),
        "kernel": platform.release(),
        "docker_server": version.get("Version"),
        "docker_api": version.get("ApiVersion"),
        "storage_driver": info.get("Driver"),
        "cgroup_version": info.get("CgroupVersion"),
        "python": platform.python_version(),
        "jupyterhub": jupyterhub.__version__,
        "dockerspawner": __import__("dockerspawner").__version__,
    }


def measure(
    client: docker.DockerClient, prefix: str, scenario: str, n: int, server: ServerKind | None, workdir: Path, args: Any
) -> list[Burst]:
    """One attempt at a scenario: its rounds (new users, then the same users returning)."""
    timeout = 120 + 10 * n
    if scenario == "db-floor":
        return database_floor_burst(client.api, prefix, n, timeout)
    assert server is not None
    if scenario in FLOOR_KINDS:
        return floor_burst(client.api, prefix, n, server, timeout, pairs=scenario == "pair-floor")
    return hub_burst(scenario, prefix, n, server, workdir / prefix, client, timeout, args.multiuser_config)


Job = tuple[str, "ServerKind | None"]  # (scenario, server kind; None for db-floor)


def measure_interleaved(client: docker.DockerClient, run: str, n: int, jobs: list[Job], args: Any) -> list[Burst]:
    """Measure every job ``--repeat`` times on a quiet machine, in passes: each pass measures every job once, so a
    machine that gets slower or faster over the run (a shared host does) shifts all scenarios alike instead of
    whichever ran at the time. Every other pass runs the jobs in reverse order, because the machine also slows down
    within a pass (minutes of full load): the job that ran last in one pass runs first in the next. Attempts that
    failed or that other work disturbed are measured again in later passes (at most ``--retries`` more per job).
    For each job and round, the attempt with the median burst time is reported; the others are kept in its
    ``discarded`` list and all burst times in ``repeat_bursts``."""
    tried: dict[int, list[list[Burst]]] = {i: [] for i in range(len(jobs))}
    good: dict[int, list[list[Burst]]] = {i: [] for i in range(len(jobs))}

    def wanted(i: int) -> bool:
        return len(good[i]) < args.repeat and len(tried[i]) < args.repeat + args.retries

    order = list(enumerate(jobs))
    while any(wanted(i) for i in tried):
        for i, (scenario, server) in order:
            if wanted(i):
                rounds = measure_attempt(client, run, scenario, n, server, len(tried[i]) + 1, args)
                tried[i].append(rounds)
                if all(b.ok and not b.disturbed for b in rounds):
                    good[i].append(rounds)
        order.reverse()  # the next pass runs them the other way round
    return [pick_median(good[i], tried[i], r) for i in tried for r in range(len(ROUNDS))]


def measure_attempt(
    client: docker.DockerClient, run: str, scenario: str, n: int, server: ServerKind | None, number: int, args: Any
) -> list[Burst]:
    """One attempt at a scenario, after waiting for a quiet machine; its rounds, logged."""
    tag = server.name[0] if server else ""
    prefix = f"{run}-{SHORT_NAMES[scenario]}{tag}{n}"
    label = f"{scenario} ({server.name if server else 'postgres'}), N={n}"
    waited = wait_for_quiet(args.quiet_wait)
    log.info("%s: attempt %d, after %.0f s waiting for a quiet machine", label, number, waited)
    rounds = measure(client, prefix, scenario, n, server, args.workdir / f"attempt{number}", args)
    for burst in rounds:
        burst.quiet_wait = waited
        burst.disturbed = disturbed(burst.cpu)
        log.info(
            "%s: median %s s, burst %s s, stop %s s; other work used %s CPU s, steal %s s%s %s",
            label + (RETURNING_SUFFIX if burst.returning else ""),
            fmt(burst.median_ready),
            fmt(burst.burst),
            fmt(burst.stop_all),
            fmt(burst.cpu.get("other")),
            fmt(burst.cpu.get("steal")),
            f" (disturbed: {burst.cpu.get('other_top')})" if burst.disturbed else "",
            burst.error,
        )
    remove_objects(client, prefix)
    time.sleep(SETTLE_SECONDS)
    return rounds


def pick_median(good: list[list[Burst]], tried: list[list[Burst]], round_index: int) -> Burst:
    """The good attempt with the median burst time in this round (or the least bad one, if none was good)."""
    good_bursts = sorted((rounds[round_index] for rounds in good), key=lambda b: b.burst or 0.0)
    if good_bursts:
        chosen = good_bursts[(len(good_bursts) - 1) // 2]
    else:
        chosen = min((rounds[round_index] for rounds in tried), key=lambda b: (not b.ok, b.cpu.get("other", 0.0)))
    chosen.attempts = len(tried)
    chosen.repeat_bursts = [b.burst for b in good_bursts if b.burst is not None]
    chosen.discarded = [rounds[round_index].summary() for rounds in tried if rounds[round_index] is not chosen]
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--sizes", default="1,10,20", help="burst sizes, comma-separated (default 1,10,20)")
    parser.add_argument("--json", type=Path, help="write every number to this file")
    parser.add_argument("--poll-servers", type=int, default=100, help="running servers to poll (default 100)")
    parser.add_argument("--poll-interval", type=float, default=2.0, help="simulated poll interval, s (default 2)")
    parser.add_argument("--poll-rounds", type=int, default=5, help="poll intervals measured per pattern (default 5)")
    parser.add_argument("--servers", default="jupyter,light", help="server kinds (default jupyter,light)")
    parser.add_argument("--scenarios", default=",".join(ALL_SCENARIOS), help="subset to run (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="measure each burst this often, keep the median")
    parser.add_argument("--retries", type=int, default=2, help="extra attempts for failed or disturbed bursts")
    parser.add_argument("--quiet-wait", type=float, default=300, help="most seconds to wait for a quiet machine")
    parser.add_argument("--workdir", type=Path, help="where hub configs and logs go (default: a new temporary dir)")
    parser.add_argument(
        "--multiuser-config",
        default="",
        help="configuration lines appended to the MultiUserSpawner hubs' config, to try a setting (diagnostic)",
    )
    parser.add_argument("--multiuser-config-file", type=Path, help="a file of such lines (see benchmarks/experiments)")
    parser.add_argument("--clean", action="store_true", help="only remove leftovers of earlier runs (bench-*)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    client = docker.from_env()
    if args.clean:
        remove_objects(client, "bench")
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    if set(scenarios) - set(ALL_SCENARIOS) or set(servers) - set(SERVER_KINDS):
        parser.error(f"scenarios are among {', '.join(ALL_SCENARIOS)}; servers among {', '.join(SERVER_KINDS)}")
    if not sizes or min(sizes) < 1 or max(sizes) > 200 or not 1 <= args.poll_servers <= 1000:
        parser.error("sizes must be 1-200 and poll servers 1-1000")
    if not 1 <= args.repeat <= 20 or not 0 <= args.retries <= 20:
        parser.error("repeat must be 1-20 and retries 0-20")
    if args.multiuser_config_file:
        args.multiuser_config += "\n" + args.multiuser_config_file.read_text()
    for image in (SINGLEUSER_IMAGE, POSTGRES_IMAGE):
        client.images.get(image)  # fails early: nothing can be pulled here

    run = f"bench-{secrets.token_hex(2)[:3]}"  # short: MultiUserSpawner prefixes have at most 16 characters
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"{run}-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": machine_info(client),
        "source": source_version(),
        "run": run,
        "sizes": sizes,
        "servers": servers,
        "workdir": str(args.workdir),
        "settings": {
            "cpu_limit": CPU_LIMIT,
            "mem_limit": MEM_LIMIT,
            "floor_probe_interval_s": HTTP_CHECK_INTERVAL,
            "multiuser_config": args.multiuser_config,
        },
    }
    bursts: dict[tuple[str, str, int], Burst] = {}
    poll: dict[str, Any] | None = None
    log.info("run %s; hub configurations and logs under %s", run, args.workdir)
    try:
        for n in sizes:
            jobs: list[Job] = [("db-floor", None)] if "db-floor" in scenarios else []
            for server in servers:
                jobs += [(s, SERVER_KINDS[server]) for s in (*FLOOR_KINDS, *HUB_KINDS) if s in scenarios]
            bursts.update((b.key, b) for b in measure_interleaved(client, run, n, jobs, args))
        if "poll" in scenarios:
            log.info("polling %d servers ...", args.poll_servers)
            poll = asyncio.run(
                poll_benchmark(client.api, f"{run}-poll", args.poll_servers, args.poll_interval, args.poll_rounds)
            )
    finally:
        remove_objects(client, run)

    results["source_at_end"] = source_version()
    if results["source_at_end"] != results["source"]:
        log.warning(
            "the code changed during the run: %s at the start, %s at the end",
            *map(results.get, ("source", "source_at_end")),
        )
    targets = evaluate(bursts, poll, sizes, servers)
    results.update(bursts=[b.summary() for b in ordered(bursts, sizes, servers)], poll=poll, targets=targets)
    machine = results["machine"]
    print(
        f"\nmultiuser-spawner {results['source']}"
        + (f" to {results['source_at_end']}" if results["source_at_end"] != results["source"] else "")
    )
    print(
        f"{machine['date']}: {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['memory_gib']} GiB, "
        f"Docker {machine['docker_server']} ({machine['storage_driver']}, cgroup v{machine['cgroup_version']}), "
        f"kernel {machine['kernel']}\n"
    )
    print(results_table(bursts, sizes, servers))
    print("\n* other work used a noticeable share of the machine during this burst, in every attempt\n")
    print(phase_table(bursts, sizes, servers))
    if any(b.scenario in ("db-floor", "pair-floor", "multiuser-db") for b in bursts.values()):
        print()
        print(database_table(bursts, sizes, servers))
    if poll:
        print()
        print(poll_table(poll))
        print("\nafter a kill:", json.dumps(poll["after_kill"]))
    print()
    print(target_table(targets))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return 0 if all(t["met"] is not False for t in targets if t["issue"]) else 1


if __name__ == "__main__":
    sys.exit(main())
