"""The machine a run measures on: who used its CPU during a burst, waiting for it to be quiet, and what machine
and which version of the project a run measured.

The machine may be shared: other work during a burst slows it down. So each burst accounts for the CPU every
process used while it ran, tells the benchmark's own (hub, proxy, engine, its containers, this script) from
everyone else's, and is measured again when someone else used a noticeable share of the machine."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import docker
import jupyterhub

from . import ROOT
from .containers import prefixed_containers

TICKS = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1
ENGINE_COMMANDS = ("dockerd", "containerd", "containerd-shim", "runc", "docker-proxy")
CONTAINER_IN_CGROUP = re.compile(r"docker[/-]([0-9a-f]{64})")
CONTAINERS_CPUACCT = Path("/sys/fs/cgroup/cpuacct/docker/cpuacct.usage")  # cgroup v1: every container, ever


@dataclass(frozen=True)
class Proc:
    started: int  # clock ticks after boot: tells a reused pid from the process seen before
    cpu: float  # user + system seconds
    children: float  # user + system seconds of its children that ended and were waited for
    comm: str
    kernel: bool
    container: str  # the id of the Docker container it runs in, or ""
    cgroup: str = ""  # its /proc/PID/cgroup, for a meter that tells apart containers of nested engines


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
            cgroup=cgroup,
        )
    return table


def _cpu_line() -> list[str]:
    """The machine's CPU times since boot, in ticks: user, nice, system, idle, iowait, irq, softirq, steal, ..."""
    return Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]


def system_busy() -> float:
    """CPU seconds all cores spent working since boot: user, nice, system, irq and softirq time (not idle, iowait,
    nor the time a hypervisor gave to other machines)."""
    values = [int(v) for v in _cpu_line()]
    return (values[0] + values[1] + values[2] + values[5] + values[6]) / TICKS


def system_steal() -> float:
    """CPU seconds the hypervisor gave to others while this machine wanted to run (0 on bare metal)."""
    values = _cpu_line()
    return int(values[7]) / TICKS if len(values) > 7 else 0.0


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
    work that is not the benchmark's and only disturbs it).

    ``classify``, when given, is asked first about every other process (after the burst): it returns the key a
    process counts under (``"containers"``, ``"docker_engine"``, ...) or None to leave it to the rules above. The
    Swarm scenarios use it for the engines of the swarm's workers, which run in containers of this machine."""

    def __init__(
        self,
        api: docker.APIClient,
        prefix: str,
        groups: dict[str, list[int]],
        classify: Callable[[Proc], str | None] | None = None,
    ):
        self.api = api
        self.prefix = prefix
        self.groups = groups
        self.classify = classify
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
        ours = {c["Id"] for c in prefixed_containers(self.api, self.prefix)}
        group_of = {pid: group for group, pids in self.groups.items() for pid in pids}
        used = dict.fromkeys([*self.groups, "docker_engine", "containers", "kernel", "other"], 0.0)
        others: dict[str, float] = {}
        for pid, proc in after.items():
            before = self._before.get(pid)
            seen = before is not None and before.started == proc.started
            delta = proc.cpu - before.cpu if seen else proc.cpu
            chosen = self.classify(proc) if self.classify and pid not in group_of else None
            if pid in group_of:
                used[group_of[pid]] += delta
            elif chosen == "docker_engine":
                used[chosen] += delta + (proc.children - before.children if seen else proc.children)
            elif chosen:
                used[chosen] += delta
                if chosen == "other" and delta > 0:
                    others[proc.comm] = others.get(proc.comm, 0.0) + delta
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
        "load_average": [round(x, 2) for x in os.getloadavg()],  # 1, 5 and 15 minutes, at the run's start
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
