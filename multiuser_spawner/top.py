"""``multiuser-spawner top``: who uses the machine during class.

Per user and server: the live CPU and memory of the notebook and of each service against their limits, and the
size of the volumes they keep, the servers that use most first; refreshed in the terminal every few seconds, or one
frame (``--once``), or JSON for scripts (``--json``).

The numbers come from Docker: one stats sample per running container (the engine takes about a second for each,
so they are asked side by side), one inspect for its limits, and one disk-usage report for all volume sizes.
Turning them into rows is pure (:func:`usage_of`, :func:`servers_of`, :func:`sort_servers`, :func:`rows`) and
tested on literal data.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from . import inventory, names

DEFAULT_INTERVAL = 5.0
# Stats calls each hold a thread for about a second: ask for many at once, or a class of 30 takes a minute a frame.
STATS_CONCURRENCY = 16
MIB = 2**20
GIB = 2**30
SORT_KEYS = ("memory", "cpu", "disk")
CLEAR_SCREEN = "\x1b[H\x1b[2J"


@dataclass(frozen=True)
class ContainerUsage:
    """One running container of a server: what it uses now and what it may use."""

    name: str
    role: str
    #: a service's key; "" for the notebook
    service: str = ""
    #: CPUs in use (1.0 = one core busy); ``None`` when Docker had no previous sample to compare with
    cpu: float | None = None
    #: CPUs it may use; ``None`` without a limit
    cpu_limit: float | None = None
    #: bytes of memory in use, page cache that can be dropped left out (as ``docker stats`` does)
    memory: int | None = None
    #: its memory limit in bytes; ``None`` without one
    memory_limit: int | None = None
    #: the volumes it keeps its data on: name -> bytes (``None`` when unknown)
    volumes: dict[str, int | None] = field(default_factory=dict)

    @property
    def disk(self) -> int:
        return sum(size for size in self.volumes.values() if size)


@dataclass(frozen=True)
class ServerUsage:
    user: str
    server: str
    #: the notebook first, then the services by key
    containers: tuple[ContainerUsage, ...]

    @property
    def cpu(self) -> float:
        return sum(c.cpu or 0.0 for c in self.containers)

    @property
    def memory(self) -> int:
        return sum(c.memory or 0 for c in self.containers)

    @property
    def disk(self) -> int:
        return sum(c.disk for c in self.containers)


# -- from Docker's answers to usage (pure) ----------------------------------------------------------------------


def cpu_in_use(stats: Mapping[str, Any]) -> float | None:
    """CPUs in use between Docker's two samples (``cpu_stats`` and ``precpu_stats``), as ``docker stats`` counts
    them, but in cores rather than percent."""
    now, before = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    used = (now.get("cpu_usage") or {}).get("total_usage")
    used_before = (before.get("cpu_usage") or {}).get("total_usage")
    system, system_before = now.get("system_cpu_usage"), before.get("system_cpu_usage")
    if None in (used, used_before, system, system_before) or system <= system_before:
        return None
    cpus = now.get("online_cpus") or len((now.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    return max(used - used_before, 0) / (system - system_before) * cpus


def memory_in_use(stats: Mapping[str, Any]) -> int | None:
    """Bytes in use, without the inactive page cache the kernel drops before it kills (as ``docker stats``)."""
    memory = stats.get("memory_stats") or {}
    usage = memory.get("usage")
    if usage is None:
        return None
    details = memory.get("stats") or {}
    cache = details.get("total_inactive_file", details.get("inactive_file", 0))  # cgroup v1, v2
    return max(int(usage) - int(cache), 0)


def limits_of(info: Mapping[str, Any]) -> tuple[float | None, int | None]:
    """The CPU and memory limits ``docker inspect`` shows (``NanoCpus``, or a CFS quota; ``Memory``)."""
    host = info.get("HostConfig") or {}
    cpu_limit = None
    if host.get("NanoCpus"):
        cpu_limit = host["NanoCpus"] / 1e9
    elif host.get("CpuQuota") and host.get("CpuQuota") > 0:
        cpu_limit = host["CpuQuota"] / (host.get("CpuPeriod") or 100_000)
    return cpu_limit, (int(host["Memory"]) if host.get("Memory") else None)


def usage_of(
    container: inventory.Resource,
    stats: Mapping[str, Any] | None,
    info: Mapping[str, Any] | None,
    volumes: Mapping[str, int | None],
) -> ContainerUsage:
    cpu_limit, memory_limit = limits_of(info or {})
    return ContainerUsage(
        name=container.name,
        role=container.role,
        service=container.service,
        cpu=cpu_in_use(stats) if stats else None,
        cpu_limit=cpu_limit,
        memory=memory_in_use(stats) if stats else None,
        memory_limit=memory_limit,
        volumes=dict(volumes),
    )


def volumes_of(container: inventory.Resource, resources: Iterable[inventory.Resource]) -> dict[str, int | None]:
    """The volumes a container keeps its data on: the user's home for a notebook, its own for a service."""
    found = {}
    for r in resources:
        if r.kind != inventory.KIND_VOLUME or r.user != container.user:
            continue
        home = container.role == names.ROLE_NOTEBOOK and r.role == names.ROLE_HOME
        data = (
            container.role == names.ROLE_SERVICE
            and r.role == names.ROLE_SERVICE_DATA
            and (r.server, r.service) == (container.server, container.service)
        )
        if home or data:
            found[r.name] = r.size
    return found


def servers_of(containers: Iterable[tuple[inventory.Resource, ContainerUsage]]) -> list[ServerUsage]:
    """Group the containers' usage per user and server, the notebook before the services."""
    grouped: dict[tuple[str, str], list[tuple[inventory.Resource, ContainerUsage]]] = {}
    for resource, usage in containers:
        grouped.setdefault((resource.user, resource.server), []).append((resource, usage))
    return [
        ServerUsage(user, server, tuple(usage for _, usage in sorted(items, key=lambda item: item[0].sort_key)))
        for (user, server), items in grouped.items()
    ]


def sort_servers(servers: Iterable[ServerUsage], by: str = "memory") -> list[ServerUsage]:
    """The servers that use most first: by memory (the resource a class runs out of), CPU or disk; ties by the
    other two, then by name so frames do not jump around."""
    if by not in SORT_KEYS:
        raise ValueError(f"cannot sort by {by!r}: choose one of {', '.join(SORT_KEYS)}")
    order = [by, *(key for key in SORT_KEYS if key != by)]
    return sorted(servers, key=lambda s: (*(-getattr(s, key) for key in order), s.user, s.server))


# -- formatting (pure) ------------------------------------------------------------------------------------------


def format_cpu(used: float | None, limit: float | None) -> str:
    shown = "?" if used is None else f"{used:.2f}"
    return f"{shown}/{limit:g}" if limit else shown


def format_memory(used: int | None, limit: int | None) -> str:
    """In binary units, as Docker's limits are written (``512M`` is 512 MiB) and as ``docker stats`` shows them."""
    shown = "?" if used is None else binary_size(used)
    if not limit:
        return shown
    percent = "" if used is None else f" {100 * used / limit:.0f}%"
    return f"{shown}/{binary_size(limit)}{percent}"


def binary_size(size: int) -> str:
    if size >= GIB:
        return f"{size / GIB:.2f} GiB".replace(".00 ", " ")
    return f"{size / MIB:.0f} MiB"


def rows(servers: Iterable[ServerUsage]) -> list[list[str]]:
    from .cli import format_size

    table = []
    for s in servers:
        for c in s.containers:
            table.append(
                [
                    s.user or "-",
                    s.server or "-",
                    f"{c.role} {c.service}".strip(),
                    c.name,
                    format_cpu(c.cpu, c.cpu_limit),
                    format_memory(c.memory, c.memory_limit),
                    format_size(c.disk) if c.volumes else "",
                ]
            )
    return table


HEADERS = ("USER", "SERVER", "ROLE", "NAME", "CPU/LIMIT", "MEMORY/LIMIT", "VOLUMES")


def summary(servers: Sequence[ServerUsage], host_cpus: int, host_memory: int) -> str:
    from .cli import format_size

    return (
        f"{len({s.user for s in servers})} user(s), {len(servers)} running server(s): "
        f"{sum(s.cpu for s in servers):.2f} of {host_cpus} CPUs, "
        f"{binary_size(sum(s.memory for s in servers))} of {binary_size(host_memory)} memory, "
        f"{format_size(sum(s.disk for s in servers))} on volumes"
    )


def as_json(servers: Iterable[ServerUsage], host_cpus: int, host_memory: int) -> dict[str, Any]:
    return {
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {"cpus": host_cpus, "memory": host_memory},
        "servers": [
            {
                "user": s.user,
                "server": s.server,
                "cpu": round(s.cpu, 3),
                "memory": s.memory,
                "disk": s.disk,
                "containers": [asdict(c) for c in s.containers],
            }
            for s in servers
        ],
    }


# -- one frame from Docker --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    servers: list[ServerUsage]
    host_cpus: int
    host_memory: int


async def take_frame(gateway: Any, settings: Any, all_hubs: bool, with_sizes: bool, by: str) -> Frame:
    from . import cleanup

    resources = await cleanup.list_resources(gateway, with_sizes=with_sizes)
    if not all_hubs:
        resources = inventory.of_hub(resources, settings.prefix, settings.templates)
    running = [r for r in resources if is_running_workload(r)]

    async def measure(container: inventory.Resource) -> tuple[inventory.Resource, ContainerUsage]:
        stats, info = await asyncio.gather(
            gateway.container_stats(container.id), gateway.inspect_container(container.id)
        )
        return container, usage_of(container, stats, info, volumes_of(container, resources))

    measured, host = await asyncio.gather(asyncio.gather(*(measure(c) for c in running)), gateway.info())
    servers = sort_servers(servers_of(measured), by)
    return Frame(servers, int(host.get("NCPU") or 0), int(host.get("MemTotal") or 0))


def is_running_workload(resource: inventory.Resource) -> bool:
    """A user's running notebook or service; not the short-lived helpers (the home volume's ownership fix)."""
    return (
        resource.kind == inventory.KIND_CONTAINER
        and resource.state == "running"
        and bool(resource.user)
        and resource.role in (names.ROLE_NOTEBOOK, names.ROLE_SERVICE)
    )


def render(frame: Frame) -> str:
    from .cli import format_table

    if not frame.servers:
        return "No running server.\n\n" + summary(frame.servers, frame.host_cpus, frame.host_memory)
    table = format_table(rows(frame.servers), HEADERS)
    return f"{table}\n\n{summary(frame.servers, frame.host_cpus, frame.host_memory)}"


# -- the command --------------------------------------------------------------------------------------------------


async def run_top(args: argparse.Namespace, out: TextIO) -> int:
    from .cli import EXIT_OK, settings_from_args
    from .docker_gateway import DockerGateway

    settings = settings_from_args(args)
    gateway = connect(DockerGateway)
    once = args.once or args.json
    try:
        while True:
            await show_frame(gateway, settings, args, once, out)
            if once:
                return EXIT_OK
            await asyncio.sleep(args.interval)
    except asyncio.CancelledError:
        # Ctrl-C: asyncio.run cancels this task; a refreshing top ends quietly, as top(1) does
        out.write("\n")
        return EXIT_OK


async def show_frame(gateway: Any, settings: Any, args: argparse.Namespace, once: bool, out: TextIO) -> None:
    frame = await take_frame(gateway, settings, args.all, not args.no_sizes, args.sort)
    if args.json:
        json.dump(as_json(frame.servers, frame.host_cpus, frame.host_memory), out, indent=2)
        out.write("\n")
    else:
        clear = "" if once or not out.isatty() else CLEAR_SCREEN
        stamp = datetime.datetime.now().strftime("%H:%M:%S")
        header = "" if once else f"multiuser-spawner top, every {args.interval:g} s (Ctrl-C to quit)  {stamp}\n\n"
        out.write(f"{clear}{header}{render(frame)}\n")
    out.flush()


def connect(gateway_class: Any) -> Any:
    import docker.errors

    from .cli import CLIError

    try:
        return gateway_class.connect({}, concurrency=STATS_CONCURRENCY, view_max_age=5)
    except docker.errors.DockerException as e:
        raise CLIError(f"cannot reach the Docker engine: {e}") from e


def positive_seconds(value: str) -> float:
    seconds = float(value)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {value}")
    return seconds


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register ``top`` with the CLI's subcommands."""
    top = commands.add_parser(
        "top", parents=[common], help="live CPU, memory and volume use per user and server, against their limits"
    )
    top.add_argument("--once", action="store_true", help="print one frame and exit")
    top.add_argument("--json", action="store_true", help="print one frame as JSON and exit, for scripts")
    top.add_argument(
        "-n", "--interval", type=positive_seconds, default=DEFAULT_INTERVAL, help="seconds between frames (%(default)s)"
    )
    top.add_argument("--sort", choices=SORT_KEYS, default="memory", help="what the first servers use most of")
    top.add_argument("--all", action="store_true", help="the servers of every hub on this engine, not only this one")
    top.add_argument("--no-sizes", action="store_true", help="skip volume sizes (Docker walks every volume for them)")
    top.set_defaults(run=run_top)
