"""The command line: which scenarios, sizes and server kinds to measure; the printed report and the JSON file."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

import docker

from hubstack import POSTGRES_IMAGE, SINGLEUSER_IMAGE
from multiuser_spawner import MultiUserSpawner

from . import __doc__ as overview
from .containers import remove_objects
from .machine import machine_info, source_version
from .passes import Job, measure_interleaved
from .polling import poll_benchmark
from .results import (
    DATABASE_SCENARIOS,
    Burst,
    database_table,
    evaluate,
    ordered,
    phase_table,
    poll_table,
    results_table,
    services_table,
    swarm_table,
    target_table,
)
from .scenarios import (
    ALL_SCENARIOS,
    CPU_LIMIT,
    DEFAULT_SCENARIOS,
    FLOOR_KINDS,
    HTTP_CHECK_INTERVAL,
    HUB_KINDS,
    MEM_LIMIT,
    SERVER_KINDS,
    SERVICES_SCENARIOS,
    SWARM_FLOOR_KINDS,
    SWARM_HUB_KINDS,
    SWARM_SCENARIOS,
)
from .services import SERVICES
from .swarm import ensure_whole_swarm, remove_swarm_objects, swarm_constraints

log = logging.getLogger("bench")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=overview.split("\n\n", 1)[0])
    parser.add_argument("--sizes", default="1,10,20", help="burst sizes, comma-separated (default 1,10,20)")
    parser.add_argument("--json", type=Path, help="write every number to this file")
    parser.add_argument("--poll-servers", type=int, default=100, help="running servers to poll (default 100)")
    parser.add_argument("--poll-interval", type=float, default=2.0, help="simulated poll interval, s (default 2)")
    parser.add_argument("--poll-rounds", type=int, default=5, help="poll intervals measured per pattern (default 5)")
    parser.add_argument("--servers", default="jupyter,light", help="server kinds (default jupyter,light)")
    parser.add_argument(
        "--scenarios",
        default=",".join(DEFAULT_SCENARIOS),
        help=f"subset to run (default: all but the swarm's: {', '.join(SWARM_SCENARIOS)})",
    )
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
    parser.add_argument(
        "--swarm-constraints",
        type=swarm_constraints,
        default="",
        help="Swarm placement constraints, comma-separated, given to every swarm scenario alike (the floor's "
        "services, SwarmSpawner and MultiUserSwarmSpawner), e.g. node.role==worker (default: none)",
    )
    parser.add_argument("--clean", action="store_true", help="only remove leftovers of earlier runs (bench-*)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    client = docker.from_env()
    if args.clean:
        remove_swarm_objects(client, "bench")
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
    with_services = any(s in scenarios for s in SERVICES_SCENARIOS)
    if "multiuser-services" in scenarios and not MultiUserSpawner.class_traits(config=True).get("services"):
        # the hub would only warn about the unknown setting, and start notebooks without their services
        parser.error("multiuser-services: this MultiUserSpawner has no `services` setting")
    if any(s in scenarios for s in SWARM_SCENARIOS):
        ensure_whole_swarm(client)
    for image in (SINGLEUSER_IMAGE, POSTGRES_IMAGE, *(s.image for s in SERVICES if with_services)):
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
            "swarm_constraints": args.swarm_constraints,
        },
    }
    if with_services:
        results["settings"]["services"] = {
            s.alias: {"preset": s.preset, "image": s.image, "limits": s.limits} for s in SERVICES
        }
    bursts: dict[tuple[str, str, int], Burst] = {}
    poll: dict[str, Any] | None = None
    log.info("run %s; hub configurations and logs under %s", run, args.workdir)
    try:
        for index, n in enumerate(sizes):
            jobs: list[Job] = [("db-floor", None)] if "db-floor" in scenarios else []
            for server in servers:
                kinds = (*FLOOR_KINDS, *HUB_KINDS, *SWARM_FLOOR_KINDS, *SWARM_HUB_KINDS)
                jobs += [(s, SERVER_KINDS[server]) for s in kinds if s in scenarios]
            if index % 2:  # as passes alternate within a size: the scenario measured last runs first next time
                jobs.reverse()
            bursts.update((b.key, b) for b in measure_interleaved(client, run, n, jobs, args))
        if "poll" in scenarios:
            log.info("polling %d servers ...", args.poll_servers)
            poll = asyncio.run(
                poll_benchmark(client.api, f"{run}-poll", args.poll_servers, args.poll_interval, args.poll_rounds)
            )
    finally:
        if any(s in scenarios for s in SWARM_SCENARIOS):
            remove_swarm_objects(client, run)
        remove_objects(client, run)

    results["source_at_end"] = source_version()
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if results["source_at_end"] != results["source"]:
        log.warning(
            "the code changed during the run: %s at the start, %s at the end",
            *map(results.get, ("source", "source_at_end")),
        )
    if any(s in scenarios for s in SWARM_SCENARIOS):
        results["swarm"] = swarm_info(client)
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
        f"kernel {machine['kernel']}; load average {machine['load_average']} at the start, "
        f"{results['load_average_at_end']} at the end\n"
    )
    print(results_table(bursts, sizes, servers))
    print("\n* other work used a noticeable share of the machine during this burst, in every attempt")
    if any(b.scenario in SERVICES_SCENARIOS for b in bursts.values()):
        print("burst / floor and stop / floor: multiuser-services against services-floor, the other hubs against floor")
    print()
    print(phase_table(bursts, sizes, servers))
    if any(b.scenario in DATABASE_SCENARIOS for b in bursts.values()):
        print()
        print(database_table(bursts, sizes, servers))
    if any(b.scenario in SERVICES_SCENARIOS for b in bursts.values()):
        print()
        print(services_table(bursts, sizes, servers))
    if any(b.scenario in SWARM_SCENARIOS for b in bursts.values()):
        print()
        print(swarm_table(bursts, sizes, servers))
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


def swarm_info(client: docker.DockerClient) -> dict[str, Any]:
    """The swarm's nodes, as the manager lists them: hostname, role, state, availability, engine version."""
    return {
        "nodes": [
            {
                "hostname": n["Description"]["Hostname"],
                "role": n["Spec"]["Role"],
                "state": n["Status"]["State"],
                "availability": n["Spec"]["Availability"],
                "engine": n["Description"]["Engine"]["EngineVersion"],
            }
            for n in client.api.nodes()
        ]
    }
