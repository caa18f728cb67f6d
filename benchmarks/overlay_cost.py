"""What one private overlay network per server costs Docker itself, on a swarm (docs/benchmarks.md, "What a private
overlay costs"). No hub and no spawner: docker-py against the manager's engine.

1. The hub's side: a container on the manager joins K new overlays, one after the other (the engine's CPU for each
   join), then K joins at once to one container and K at once to K containers (wall time: does Docker make one
   container's joins one at a time?).
2. The servers' side: K one-replica services on the workers, each on its own overlay, against K on one shared
   overlay (the workers' engines' CPU until every task runs).

CPU is read from /proc (user + system time of each engine process and of the processes it waited for, such as
iptables), so it must run on the manager's host, with the workers of scripts/swarm. Everything it makes carries
the label org.multiuser-spawner.benchmark=overlay-cost and is removed by that label, also at the start.

    .venv/bin/python benchmarks/overlay_cost.py [--networks K] [--image IMAGE] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
from mus_bench.machine import process_table
from mus_bench.swarm import remove_network_when_free, wait_until_gone

LABEL = "org.multiuser-spawner.benchmark"
LABELS = {LABEL: "overlay-cost"}
ENGINES = {"dockerd": "manager engine", "swarm-node-dock": "worker engines"}  # comm (15 characters) -> group


def engine_cpu() -> dict[str, float]:
    """CPU seconds so far of each group of engine processes, children waited for included."""
    used = dict.fromkeys(ENGINES.values(), 0.0)
    for proc in process_table().values():
        group = ENGINES.get(proc.comm)
        if group:
            used[group] += proc.cpu + proc.children
    return used


def spent(before: dict[str, float]) -> dict[str, float]:
    after = engine_cpu()
    return {k: round(after[k] - before[k], 2) for k in after}


def remove_ours(client: docker.DockerClient) -> None:
    api = client.api
    services = {service["ID"] for service in api.services(filters={"label": LABEL})}
    for service in services:
        api.remove_service(service)
    wait_until_gone(api, services, 120)  # their containers leave the networks
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        container.remove(force=True)
    for network in api.networks(filters={"label": LABEL}):
        remove_network_when_free(api, network["Id"])


def tasks_of(api: docker.APIClient, services: set[str]) -> list[dict[str, Any]]:
    return [task for task in api.tasks() if task["ServiceID"] in services]


def overlays(api: docker.APIClient, name: str, count: int) -> list[str]:
    return [
        api.create_network(f"{name}{i}", driver="overlay", attachable=True, labels=LABELS)["Id"] for i in range(count)
    ]


def holder(client: docker.DockerClient, name: str, image: str) -> Any:
    return client.containers.run(image, ["sleep", "infinity"], name=name, detach=True, labels=LABELS)


def joins_in_turn(client: docker.DockerClient, image: str, count: int) -> dict[str, Any]:
    api = client.api
    hub = holder(client, "overlay-cost-hub", image)
    second = holder(client, "overlay-cost-second", image)
    first_joins, second_joins = [], []
    for network in overlays(api, "overlay-cost-turn", count):
        before = engine_cpu()
        api.connect_container_to_network(hub.id, network)  # the first endpoint on this node: makes the network
        first_joins.append(spent(before)["manager engine"])
        before = engine_cpu()
        api.connect_container_to_network(second.id, network)  # the network is there: only the endpoint
        second_joins.append(spent(before)["manager engine"])
    return {
        "first join on the node, CPU s each": round(sum(first_joins) / count, 3),
        "another container's join, CPU s each": round(sum(second_joins) / count, 3),
    }


def joins_at_once(client: docker.DockerClient, image: str, count: int, containers: int) -> float:
    api = client.api
    holders = [holder(client, f"overlay-cost-at-once{containers}-{i}", image) for i in range(containers)]
    networks = overlays(api, f"overlay-cost-at-once{containers}-", count)

    def join(i: int) -> None:
        api.connect_container_to_network(holders[i % containers].id, networks[i])

    began = time.monotonic()
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(join, range(count)))
    return round(time.monotonic() - began, 2)


def services_running(client: docker.DockerClient, image: str, count: int, private: bool) -> dict[str, Any]:
    api = client.api
    networks = overlays(api, f"overlay-cost-{'private' if private else 'shared'}", count if private else 1)
    before = engine_cpu()
    began = time.monotonic()
    services = set()
    for i in range(count):
        service = api.create_service(
            docker.types.TaskTemplate(
                docker.types.ContainerSpec(image, ["sleep", "infinity"]),
                restart_policy=docker.types.RestartPolicy("none"),
                placement=docker.types.Placement(constraints=["node.role==worker"]),
                networks=[networks[i % len(networks)]],
            ),
            name=f"overlay-cost-{'private' if private else 'shared'}-s{i}",
            endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"),
            labels=LABELS,
        )
        services.add(service["ID"])
    while sum(t["Status"]["State"] == "running" for t in tasks_of(api, services)) < count:
        if time.monotonic() - began > 300:
            raise TimeoutError(f"{count} tasks did not all run within 300 s")
        time.sleep(0.2)
    return {"seconds": round(time.monotonic() - began, 2), **spent(before)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--networks", type=int, default=10, help="K: networks (and services) per step (default 10)")
    parser.add_argument("--image", default="multiuser-spawner/singleuser:latest", help="any image on every node")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    client = docker.from_env()
    count = args.networks
    remove_ours(client)
    results: dict[str, Any] = {"networks": count}
    try:
        results["hub side"] = joins_in_turn(client, args.image, count)
        remove_ours(client)
        results["hub side"]["K joins at once, one container, s"] = joins_at_once(client, args.image, count, 1)
        remove_ours(client)
        results["hub side"]["K joins at once, K containers, s"] = joins_at_once(client, args.image, count, count)
        remove_ours(client)
        results["servers side, one overlay each"] = services_running(client, args.image, count, private=True)
        remove_ours(client)
        results["servers side, one shared overlay"] = services_running(client, args.image, count, private=False)
    finally:
        remove_ours(client)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
