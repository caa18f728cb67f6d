"""Measuring the scenarios of one size: each attempt after a wait for a quiet machine, in passes over all of them
(every other pass in reverse order), repeated and retried, and the attempt with the median burst reported."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import docker

from .containers import remove_objects
from .floors import database_floor_burst, floor_burst
from .hubs import hub_burst
from .machine import disturbed, wait_for_quiet
from .results import Burst, fmt
from .scenarios import (
    FLOOR_KINDS,
    RETURNING_SUFFIX,
    ROUNDS,
    SETTLE_SECONDS,
    SHORT_NAMES,
    SWARM_SCENARIOS,
    ServerKind,
    burst_timeout,
)
from .swarm import remove_swarm_objects, swarm_floor_burst, swarm_hub_burst

log = logging.getLogger("bench")


def measure(
    client: docker.DockerClient, prefix: str, scenario: str, n: int, server: ServerKind | None, workdir: Path, args: Any
) -> list[Burst]:
    """One attempt at a scenario: its rounds (new users, then the same users returning)."""
    timeout = burst_timeout(scenario, n)
    if scenario == "db-floor":
        return database_floor_burst(client.api, prefix, n, timeout)
    assert server is not None
    if scenario == "swarm-floor":
        return swarm_floor_burst(client, prefix, n, server, timeout, args.swarm_constraints)
    if scenario in SWARM_SCENARIOS:
        return swarm_hub_burst(scenario, prefix, n, server, workdir / prefix, client, timeout, args.swarm_constraints)
    if scenario in FLOOR_KINDS:
        return floor_burst(client.api, prefix, n, server, timeout, scenario)
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
    if scenario in SWARM_SCENARIOS:
        remove_swarm_objects(client, prefix)  # the next attempt's new users must find no volume on any node
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
