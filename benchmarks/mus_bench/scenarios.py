"""What every scenario shares: the scenario names, the server kinds, the notebook's limits, the users, and the way a
burst releases all its requests at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

CPU_LIMIT = 1.0
MEM_LIMIT = 1024**3  # "1G" as the hub's ByteSpecification reads it
SERVER_PORT = 8888
HOME = "/home/jovyan"
HTTP_CHECK_INTERVAL = 0.05  # the floors' readiness probe period (the hub's own backoff starts at up to 0.2 s)
HUB_LIST_INTERVAL = 0.25  # how often the hub's user list is read, should the hub answer a request before finishing
SETTLE_SECONDS = 3.0  # pause after a scenario's clean-up, before the next one
#: "multiuser-services-prepared": the same hub and users, with ``multiuser-spawner prepare`` run (untimed) before the
#: first burst, as an admin would before a class's first meeting.
HUB_KINDS = ("docker", "multiuser", "multiuser-db", "multiuser-services", "multiuser-services-prepared")
FLOOR_KINDS = ("floor", "pair-floor", "services-floor")
#: On the swarm the host's engine manages (``scripts/swarm up``): the floor (``docker service create`` directly),
#: DockerSpawner's own SwarmSpawner, and MultiUserSwarmSpawner. Not part of a default run: they need a swarm.
SWARM_FLOOR_KINDS = ("swarm-floor",)
#: "swarm-multiuser-shared": ours without a private network per server, on one overlay shared by every server, as
#: SwarmSpawner runs them: the same network design on both sides (a diagnostic).
SWARM_HUB_KINDS = ("swarm-docker", "swarm-multiuser", "swarm-multiuser-shared")
SWARM_SCENARIOS = (*SWARM_FLOOR_KINDS, *SWARM_HUB_KINDS)
ALL_SCENARIOS = (*FLOOR_KINDS, "db-floor", *HUB_KINDS, "poll", *SWARM_SCENARIOS)
DEFAULT_SCENARIOS = tuple(s for s in ALL_SCENARIOS if s not in SWARM_SCENARIOS)
SERVICES_SCENARIOS = ("services-floor", "multiuser-services", "multiuser-services-prepared")
# Each hub scenario's floor: the same containers started directly, which its burst and stop times are divided by.
FLOOR_OF = {
    "docker": "floor",
    "multiuser": "floor",
    "multiuser-db": "floor",
    "multiuser-services": "services-floor",
    "multiuser-services-prepared": "services-floor",
    "swarm-docker": "swarm-floor",
    "swarm-multiuser": "swarm-floor",
    "swarm-multiuser-shared": "swarm-floor",
}
# The stock spawner each of ours is compared with, on the same engine.
STOCK_OF = {
    "multiuser": "docker",
    "multiuser-db": "docker",
    "swarm-multiuser": "swarm-docker",
    "swarm-multiuser-shared": "swarm-docker",
}
# A class logs in on day one with new users (new volumes: new homes, databases to initialise), and on every later
# day as returning users, whose volumes exist. Each scenario measures both, in that order, on the same volumes.
ROUNDS = (False, True)  # returning?
RETURNING_SUFFIX = ", returning"
SHORT_NAMES = {
    "floor": "fl",
    "pair-floor": "pf",
    "services-floor": "sf",
    "db-floor": "pg",
    "docker": "ds",
    "multiuser": "mu",
    "multiuser-db": "db",
    "multiuser-services": "ms",
    "multiuser-services-prepared": "mp",
    "swarm-floor": "wf",
    "swarm-docker": "wd",
    "swarm-multiuser": "wm",
    "swarm-multiuser-shared": "ws",
}


def container_limits(cpu: float, memory: int) -> dict[str, int]:
    """docker-py's host-config settings for a CPU limit in cores and a memory limit in bytes."""
    return {"mem_limit": memory, "cpu_period": 100_000, "cpu_quota": int(cpu * 100_000)}


NOTEBOOK_LIMITS = container_limits(CPU_LIMIT, MEM_LIMIT)


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


def burst_timeout(scenario: str, n: int) -> int:
    """Seconds a burst of ``n`` may take before it counts as failed; also the hubs' start and stop timeouts. The
    services scenarios get 60 s more: MultiUserSpawner wants its start timeout at least 30 s longer than its
    slowest service's readiness timeout (RabbitMQ's, 150 s)."""
    return 120 + 10 * n + (60 if scenario in SERVICES_SCENARIOS else 0)


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
