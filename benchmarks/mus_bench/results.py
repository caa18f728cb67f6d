"""What one burst measured, the targets those numbers are held against, and the tables they are printed as."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from .scenarios import (
    FLOOR_KINDS,
    FLOOR_OF,
    HUB_KINDS,
    RETURNING_SUFFIX,
    ROUNDS,
    SERVICES_SCENARIOS,
    STOCK_OF,
    SWARM_FLOOR_KINDS,
    SWARM_HUB_KINDS,
)
from .services import SERVICES

ALL_FLOORS = (*FLOOR_KINDS, *SWARM_FLOOR_KINDS)
ALL_HUBS = (*HUB_KINDS, *SWARM_HUB_KINDS)


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
    notes: dict[str, Any] = field(default_factory=dict)  # what else a scenario observed (e.g. servers per node)

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


Bursts = dict[tuple[str, str, int], Burst]


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


# -- targets ---------------------------------------------------------------------------------------------------------


def evaluate(bursts: Bursts, poll: dict[str, Any] | None, sizes: list[int], servers: list[str]) -> list[dict]:
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

                def get(scenario: str, server: str = server, suffix: str = suffix, n: int = n) -> Burst | None:
                    return bursts.get((server, scenario + suffix, n))

                floor, stock, multi, multi_db = get("floor"), get("docker"), get("multiuser"), get("multiuser-db")
                db_floor = get("db-floor", server="postgres")
                multi_services = get("multiuser-services")
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
                    pair_floor = get("pair-floor")
                    target(
                        f"database on, N={n}{who}: multiuser-db / pair floor",
                        server,
                        ratio(multi_db.burst, pair_floor and pair_floor.burst),
                        1.15,
                        diagnostic=True,
                    )
                swarm_target(target, get, n, who)
                if multi_services and n == 10:
                    services_floor = get("services-floor")
                    target(
                        f"services on, N={n}{who}: multiuser-services / services floor",
                        server,
                        ratio(multi_services.burst, services_floor and services_floor.burst),
                        1.15,
                    )
    if poll:
        entry = poll["spawners"].get("MultiUserSpawner")
        worst = max(entry["at_once_requests_max"], entry["spread_requests_max"]) if entry else None
        target(f"polling {poll['servers']} servers: Docker requests per interval", "-", worst, 2, "requests")
    return targets


def swarm_target(target: Callable[..., None], get: Callable[[str], Burst | None], n: int, who: str) -> None:
    """The Swarm targets: MultiUserSwarmSpawner within 1.15x of the floor (``docker service create`` of the same
    specs, no hub) and ahead of DockerSpawner's SwarmSpawner (a ratio below 1)."""
    ours, floor, stock = get("swarm-multiuser"), get("swarm-floor"), get("swarm-docker")
    if ours is None:
        return
    server = ours.server
    label = f"swarm, burst of {n}{who}: multiuser-swarm"
    target(f"{label} / swarm floor", server, ratio(ours.burst, floor and floor.burst), 1.15)
    target(
        f"{label} / SwarmSpawner",
        server,
        ratio(ours.burst, stock and stock.burst),
        1.0,
    )
    shared = get("swarm-multiuser-shared")
    if shared is not None:
        target(
            f"{label} on one shared network / SwarmSpawner",
            server,
            ratio(shared.burst, stock and stock.burst),
            1.0,
            diagnostic=True,
        )
    target(
        f"swarm, stop of {n}{who}: multiuser-swarm / swarm floor",
        server,
        ratio(ours.stop_all, floor and floor.stop_all),
        1.2,
        diagnostic=True,
    )


# -- tables ----------------------------------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def median_cell(values: list[float]) -> str:
    """A table cell: the median of ``values``, or "-" when there are none."""
    return fmt(statistics.median(values)) if values else "-"


def median_phase(phases: Iterable[dict[str, float]], key: str) -> str:
    """A table cell: the median of one phase over the users that have it."""
    return median_cell([p[key] for p in phases if key in p])


def ordered(bursts: Bursts, sizes: list[int], servers: list[str]) -> list[Burst]:
    out = []
    for n in sizes:
        for suffix in ("", RETURNING_SUFFIX):
            if ("postgres", "db-floor" + suffix, n) in bursts:
                out.append(bursts[("postgres", "db-floor" + suffix, n)])
            for server in servers:
                keys = [(server, s + suffix, n) for s in (*ALL_FLOORS, *ALL_HUBS)]
                out.extend(bursts[key] for key in keys if key in bursts)
    return out


def results_table(bursts: Bursts, sizes: list[int], servers: list[str]) -> str:
    """Each hub scenario's burst and stop times against its floor (``FLOOR_OF``) and against the stock spawner's
    (``STOCK_OF``: DockerSpawner, or on the swarm DockerSpawner's SwarmSpawner)."""
    lines = [
        "| server | scenario | N | median ready (s) | max ready (s) | burst (s) | stop all (s) "
        "| burst / floor | burst / docker | stop / floor |",
        "|" + "---|" * 10,
    ]
    for b in ordered(bursts, sizes, servers):
        suffix = RETURNING_SUFFIX if b.returning else ""
        hub_row = b.scenario in ALL_HUBS
        floor = bursts.get((b.server, FLOOR_OF[b.scenario] + suffix, b.n)) if hub_row else None
        stock = bursts.get((b.server, STOCK_OF[b.scenario] + suffix, b.n)) if b.scenario in STOCK_OF else None
        vs_floor = ratio(b.burst, floor and floor.burst) if hub_row else None
        vs_docker = ratio(b.burst, stock and stock.burst) if stock else None
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


def phase_table(bursts: Bursts, sizes: list[int], servers: list[str]) -> str:
    """Where the time goes: medians over one burst's users, in seconds since the burst's requests went out."""
    lines = [
        "| server | scenario | N | container running | server up | ready | up → ready | start() | stop() "
        "| CPU s: containers (all) / hub / engine / other | machine busy |",
        "|" + "---|" * 11,
    ]

    for b in ordered(bursts, sizes, servers):
        # a failed burst's timelines may lack its start, and would read as hours
        if b.scenario == "db-floor" or not b.phases or b.error:
            continue
        phases = b.phases.values()
        lag = [b.ready[u] - p["server_up"] for u, p in b.phases.items() if "server_up" in p and u in b.ready]
        containers = fmt(b.cpu.get("containers"), 1)
        if "containers_all" in b.cpu:
            containers += f" ({fmt(b.cpu['containers_all'], 1)})"
        cpu = " / ".join([containers, *(fmt(b.cpu.get(k), 1) for k in ("hub", "docker_engine", "other"))])
        busy = b.cpu.get("machine_utilisation")
        cells = [
            median_phase(phases, "container_running"),
            median_phase(phases, "server_up"),
            fmt(b.median_ready),
            median_cell(lag),
            median_phase(phases, "spawner_start"),
            median_phase(phases, "spawner_stop"),
            cpu,
            f"{fmt(busy and busy * 100, 0)}%",
        ]
        lines.append(f"| {b.server} | {b.label} | {b.n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sidecar_table(
    bursts: Bursts,
    sizes: list[int],
    servers: list[str],
    scenarios: tuple[str, ...],
    columns: dict[str, str],
    lag_header: str,
) -> str:
    """The timelines of the containers beside the notebooks: medians, in seconds since the burst's requests, of
    ``columns`` (header -> phase), of the ready time, and of the time from the last of the ``*_up`` phases to
    ready (over the users for whom every sidecar's ``*_up`` was seen)."""
    lines = [
        f"| server | scenario | N | {' | '.join(columns)} | ready | {lag_header} |",
        "|" + "---|" * (5 + len(columns)),
    ]
    sidecars_up = [key for key in columns.values() if key.endswith("_up") and key != "server_up"]

    for b in ordered(bursts, sizes, servers):
        if b.scenario not in scenarios:
            continue
        phases = b.phases.values()
        lag = [
            b.ready[u] - max(p.get(key, 0.0) for key in (*sidecars_up, "server_up"))
            for u, p in b.phases.items()
            if all(key in p for key in sidecars_up) and u in b.ready
        ]
        cells = [*(median_phase(phases, key) for key in columns.values()), fmt(b.median_ready), median_cell(lag)]
        lines.append(f"| {b.server} | {b.label} | {b.n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


DATABASE_SCENARIOS = ("db-floor", "pair-floor", "multiuser-db")


def database_table(bursts: Bursts, sizes: list[int], servers: list[str]) -> str:
    """The database's own timeline, raw and beside a notebook: medians in seconds since the burst's requests."""
    columns = {"database container running": "db_running", "database up": "db_up", "notebook server up": "server_up"}
    return sidecar_table(bursts, sizes, servers, DATABASE_SCENARIOS, columns, "ready - last of both up")


def services_table(bursts: Bursts, sizes: list[int], servers: list[str]) -> str:
    """The services' timelines beside a notebook: medians in seconds since the burst's requests."""
    columns = {f"{s.alias} ({s.preset}) up": f"{s.alias}_up" for s in SERVICES}
    columns["notebook server up"] = "server_up"
    return sidecar_table(bursts, sizes, servers, SERVICES_SCENARIOS, columns, "ready - last of all up")


def swarm_table(bursts: Bursts, sizes: list[int], servers: list[str]) -> str:
    """The swarm scenarios: where the servers ran, and when the last task was gone after the stop burst (the hubs'
    stop times are the hub's answers; SwarmSpawner's stop answers before its task has stopped)."""
    lines = ["| server | scenario | N | servers per node | stop: hub answered (s) | stop: last task gone (s) |"]
    lines.append("|" + "---|" * 6)
    for b in ordered(bursts, sizes, servers):
        if not b.scenario.startswith("swarm-"):
            continue
        per_node = ", ".join(f"{node} {count}" for node, count in (b.notes.get("servers_per_node") or {}).items())
        gone = b.notes.get("all_tasks_gone", b.stop_all if b.scenario == "swarm-floor" else None)
        lines.append(f"| {b.server} | {b.label} | {b.n} | {per_node or '-'} | {fmt(b.stop_all)} | {fmt(gone)} |")
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
