"""The project's objects on a swarm, for ``multiuser-spawner ls`` and ``gc``: services (with the node their task
runs on), overlay networks, and volumes per node.

A manager sees services, tasks, nodes, overlays and the volume records (Swarm configs, see :mod:`.swarm`), but not
the volumes on other nodes: each record names the node that holds its volume (:data:`.swarm.LABEL_NODE`), and that
is where ``ls`` says a volume is and where ``gc`` removes one, with a one-shot task on that node (as the hub does when
it deletes a user); when the node is down, ``gc`` says which node holds the volume. The row builders are pure functions
of what Docker's list calls return; the listing and the removal talk to the manager.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import inventory, names
from .cleanup import RemovalReport
from .docker_gateway import DockerGatewayError
from .inventory import Resource
from .swarm import (
    LABEL_NODE,
    LABEL_NODE_NAME,
    SwarmGateway,
    latest_task,
    node_name,
    node_unavailable,
    task_failure,
    task_state,
)
from .swarm_jobs import remove_volume_on_node

#: ``c.JupyterHub.spawner_class`` values that put a hub on a swarm (its entry point and class paths)
SWARM_SPAWNER_NAMES = frozenset(
    {
        "multiuser-swarm",
        "multiuser_spawner.MultiUserSwarmSpawner",
        "multiuser_spawner.swarm_spawner.MultiUserSwarmSpawner",
    }
)
#: how long gc waits for a removed service's tasks, and for an overlay's last endpoint, to go
REMOVAL_TIMEOUT = 60
CHECK_INTERVAL = 0.25
#: how long the one-shot task that removes a volume on its node may take (it waits for the volume to be free)


class NotAManager(DockerGatewayError):
    """The engine the CLI talks to cannot answer for the swarm."""


def is_swarm_spawner(spawner_class: Any) -> bool:
    """Whether a hub's ``spawner_class`` (a name or a class) is the Swarm spawner or a subclass of it."""
    if isinstance(spawner_class, type):
        from .swarm_spawner import MultiUserSwarmSpawner

        return issubclass(spawner_class, MultiUserSwarmSpawner)
    return str(spawner_class) in SWARM_SPAWNER_NAMES


def manager_problem(info: Mapping[str, Any]) -> str:
    """Why this engine (``GET /info``) cannot list a swarm's objects; "" when it is a manager of an active swarm."""
    swarm = info.get("Swarm") or {}
    if swarm.get("LocalNodeState") != "active":
        return "this Docker engine is not part of a swarm: run the command on a manager of the hub's swarm"
    if not swarm.get("ControlAvailable"):
        return "this Docker engine is a swarm worker: run the command on a manager (docker node ls lists them)"
    return ""


# -- pure: rows from Docker's lists -----------------------------------------------------------------------------------


def _labels(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return obj.get("Labels") or {}


def from_service(
    service: Mapping[str, Any], tasks: list[dict[str, Any]], nodes: Mapping[str, Mapping[str, Any]]
) -> Resource:
    """A service as ``GET /services`` lists it, with the state of its newest task and that task's node."""
    spec = service.get("Spec") or {}
    task = latest_task(tasks)
    state, node, note = "no task", "", ""
    if task is not None:
        state = task_state(task) or "unknown"
        node_id = task.get("NodeID") or ""
        node = node_name(dict(nodes[node_id])) if node_id in nodes else node_id
        note = task_failure(task)
    return Resource(
        kind=inventory.KIND_SERVICE,
        name=spec.get("Name", ""),
        id=service.get("ID", ""),
        state=state,
        note=note,
        node=node,
        **inventory._owner(_labels(spec)),
    )


def from_record(record: Mapping[str, Any], sizes: Mapping[str, int], local_node: str) -> Resource:
    """A volume, from its record: the node that holds it (a host name; "" when no task has made it yet, or the
    volumes are shared), and its size when it lives on this engine's node (``sizes``: this engine's
    ``/system/df``)."""
    spec = record.get("Spec") or {}
    labels = _labels(spec)
    name = spec.get("Name", "")
    on_this_node = bool(labels.get(LABEL_NODE)) and labels.get(LABEL_NODE) == local_node
    return Resource(
        kind=inventory.KIND_VOLUME,
        name=name,
        id=name,
        size=sizes.get(name) if on_this_node else None,
        node=labels.get(LABEL_NODE_NAME) or labels.get(LABEL_NODE, ""),
        **inventory._owner(labels),
    )


def collect(
    services: Iterable[Mapping[str, Any]],
    tasks: Iterable[Mapping[str, Any]],
    nodes: Iterable[Mapping[str, Any]],
    networks: Iterable[Mapping[str, Any]],
    records: Iterable[Mapping[str, Any]],
    sizes: Mapping[str, int] | None = None,
    local_node: str = "",
) -> list[Resource]:
    """Every service, network and volume record carrying the project's label, sorted by user, server and kind."""
    by_id = {n["ID"]: n for n in nodes}
    tasks_by_service: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        tasks_by_service.setdefault(task.get("ServiceID", ""), []).append(dict(task))
    found = [
        from_service(s, tasks_by_service.get(s.get("ID", ""), []), by_id)
        for s in services
        if _managed(s.get("Spec") or {})
    ]
    found += [inventory.from_network(n) for n in networks if _managed(n)]
    found += [from_record(r, sizes or {}, local_node) for r in records if _managed(r.get("Spec") or {})]
    return sorted(found, key=lambda r: r.sort_key)


def _managed(obj: Mapping[str, Any]) -> bool:
    return _labels(obj).get(names.LABEL_MANAGED) == "true"


#: what gc does with a deleted user's volume on a swarm
REMOVE_ON_NODE = "remove on its node"  # a one-shot task on the node removes it, then its record goes
REMOVE_RECORD = "remove record"  # no node holds it (never mounted, or shared storage): only the record goes
KEEP = "keep"  # its node is down or gone: volume and record stay, so a later gc finds it again


@dataclass(frozen=True)
class VolumeRemoval:
    volume: Resource
    action: str
    #: the node that holds it (an id); "" when none is recorded
    node_id: str = ""
    #: for the admin, when gc cannot remove the volume itself: where it is and what to do
    instruction: str = ""


def plan_volume_removals(
    volumes: Iterable[Resource], pins: Mapping[str, str], nodes: Iterable[Mapping[str, Any]]
) -> list[VolumeRemoval]:
    """For each volume (``pins``: volume name -> the node id its record names), how gc removes it: on its node when
    that node can run a task, else it stays and the sentence names the node."""
    by_id = {n["ID"]: n for n in nodes}
    plans = []
    for volume in volumes:
        node_id = pins.get(volume.name, "")
        node = by_id.get(node_id)
        where = node_name(dict(node)) if node else volume.node or node_id
        if not node_id:
            plans.append(
                VolumeRemoval(
                    volume,
                    REMOVE_RECORD,
                    instruction=f"volume {volume.name} has no node recorded (never started, or on shared storage): "
                    "its record goes; files on shared storage stay there, for you to remove",
                )
            )
        elif node is not None and not node_unavailable(dict(node)):
            plans.append(VolumeRemoval(volume, REMOVE_ON_NODE, node_id))
        else:
            why = node_unavailable(dict(node)) if node else "has left the swarm"
            plans.append(
                VolumeRemoval(
                    volume,
                    KEEP,
                    node_id,
                    instruction=f"volume {volume.name} lives on node {where}, which {why}: it stays, with its "
                    f"record, until gc runs with the node back, or run `docker volume rm {volume.name}` on {where}",
                )
            )
    return plans


# -- talking to the manager -------------------------------------------------------------------------------------------


async def local_node(gateway: SwarmGateway) -> tuple[str, str]:
    """The id and host name of the node whose engine the CLI talks to; raise when it cannot answer for the swarm."""
    info = await gateway.info()
    problem = manager_problem(info)
    if problem:
        raise NotAManager(problem)
    node_id = info["Swarm"].get("NodeID", "")
    node = await gateway.inspect_node(node_id)
    return node_id, node_name(node) if node else info.get("Name", node_id)


async def list_resources(gateway: SwarmGateway, with_sizes: bool = False) -> list[Resource]:
    """The project's services (with their tasks' nodes), overlays and volume records on the swarm."""
    node_id, _ = await local_node(gateway)
    filters = [f"{names.LABEL_MANAGED}=true"]
    services, tasks, nodes, networks, records = await asyncio.gather(
        gateway.list_services(filters),
        gateway.all_tasks(),
        gateway.nodes(),
        gateway.list_networks(filters),
        gateway.list_records(filters),
    )
    sizes = inventory.volume_sizes(await gateway.disk_usage()) if with_sizes else {}
    return collect(services, tasks, nodes, networks, records, sizes, node_id)


async def remove_resources(
    gateway: SwarmGateway, resources: Iterable[Resource], hub_container: str = "", job_image: str = ""
) -> tuple[RemovalReport, list[str]]:
    """Remove the services (and wait until their tasks are gone), then the overlays (free once the last endpoint
    left; the hub's container is disconnected first), then the volumes: each on its node by a one-shot task of
    ``job_image`` (which needs ``python3``), then its record. Services and networks are addressed by id, so one made
    anew under the same name meanwhile stays. Returns what happened and, for volumes gc could not reach, the
    sentences saying where they are and what to do."""
    report = RemovalReport()
    by_kind: dict[str, list[Resource]] = {}
    for resource in resources:
        by_kind.setdefault(resource.kind, []).append(resource)
    await _each(report, by_kind.get(inventory.KIND_SERVICE, []), lambda r: remove_service_and_wait(gateway, r.id))
    await _each(report, by_kind.get(inventory.KIND_NETWORK, []), lambda r: remove_overlay(gateway, r, hub_container))
    volumes = by_kind.get(inventory.KIND_VOLUME, [])
    if not volumes:
        return report, []
    records = await asyncio.gather(*(gateway.inspect_record(v.name) for v in volumes))
    pins = {
        v.name: ((r or {}).get("Spec", {}).get("Labels") or {}).get(LABEL_NODE, "")
        for v, r in zip(volumes, records, strict=True)
    }
    plans = plan_volume_removals(volumes, pins, await gateway.nodes())
    for plan in plans:
        if plan.action == KEEP:
            report.failed.append(f"volume {plan.volume.name}: its node is out of reach")
    doable = [p for p in plans if p.action != KEEP]
    outcomes = await asyncio.gather(*(_remove_volume(gateway, p, job_image) for p in doable), return_exceptions=True)
    for plan, outcome in zip(doable, outcomes, strict=True):
        where = f" on node {plan.volume.node}" if plan.action == REMOVE_ON_NODE else " (its record)"
        if isinstance(outcome, BaseException):
            report.failed.append(f"volume {plan.volume.name}{where}: {outcome}")
        else:
            report.removed.append(f"volume {plan.volume.name}{where}")
    return report, [p.instruction for p in plans if p.instruction]


async def _each(report: RemovalReport, batch: list[Resource], remove: Any) -> None:
    outcomes = await asyncio.gather(*(remove(r) for r in batch), return_exceptions=True)
    for resource, outcome in zip(batch, outcomes, strict=True):
        where = f" on {resource.node}" if resource.node and resource.kind == inventory.KIND_SERVICE else ""
        if isinstance(outcome, BaseException):
            report.failed.append(f"{resource.kind} {resource.name}{where}: {outcome}")
        else:
            report.removed.append(f"{resource.kind} {resource.name}{where}")


async def remove_service_and_wait(gateway: SwarmGateway, service_id: str, timeout: float = REMOVAL_TIMEOUT) -> None:
    """Remove a service and wait until its tasks are gone: until then its overlay has endpoints and its volumes are
    mounted."""
    await gateway.remove_service(service_id)
    deadline = time.monotonic() + timeout
    # not filtered by service: Swarm no longer knows the service, but its tasks are listed until they are gone
    while [t for t in await gateway.all_tasks() if t.get("ServiceID") == service_id]:
        if time.monotonic() > deadline:
            raise DockerGatewayError(f"its tasks were still there {timeout:g} s after its removal")
        await asyncio.sleep(CHECK_INTERVAL)


async def remove_overlay(
    gateway: SwarmGateway, network: Resource, hub_container: str = "", timeout: float = REMOVAL_TIMEOUT
) -> None:
    """Disconnect the hub's container, then remove the overlay, again until its last endpoint has left (a task's
    endpoint goes a moment after the task)."""
    if hub_container:
        await gateway.disconnect_network(network.id, hub_container)
    deadline = time.monotonic() + timeout
    while await gateway.inspect_network(network.id) is not None:
        try:
            await gateway.remove_network(network.id)
        except DockerGatewayError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(CHECK_INTERVAL)


async def _remove_volume(gateway: SwarmGateway, plan: VolumeRemoval, job_image: str) -> None:
    """The volume on its node (only if that node's volume carries the same hub and user: see
    :func:`.swarm_jobs.volume_removal_job`), then its record; a failure keeps the record, so the next gc tries
    again."""
    volume = plan.volume
    if plan.action == REMOVE_ON_NODE:
        owner = names.Owner(hub=volume.hub, user=volume.user, user_id=volume.user_id, user_created=volume.user_created)
        await remove_volume_on_node(gateway, volume.name, plan.node_id, job_image, owner)
    await gateway.remove_record(volume.name)
