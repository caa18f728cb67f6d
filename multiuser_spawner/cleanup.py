"""Finding and removing the project's Docker objects: a deleted user's, or the orphans ``multiuser-spawner gc``
finds. What to remove is decided in :mod:`.inventory`; this module only lists and removes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import inventory, names, network
from .docker_gateway import DockerGateway, DockerGatewayError
from .inventory import Resource

DEFAULT_STOP_TIMEOUT = 10


@dataclass
class RemovalReport:
    removed: list[str] = field(default_factory=list)
    #: one message per object that could not be removed
    failed: list[str] = field(default_factory=list)


async def list_resources(
    gateway: DockerGateway, label_filters: Iterable[str] = (), with_sizes: bool = False
) -> list[Resource]:
    """Every container, network and volume with the project's label (and ``label_filters``, ``key=value``)."""
    filters = [f"{names.LABEL_MANAGED}=true", *label_filters]
    containers, networks, volumes = await asyncio.gather(
        gateway.list_containers(filters), gateway.list_networks(filters), gateway.list_volumes(filters)
    )
    sizes = inventory.volume_sizes(await gateway.disk_usage()) if with_sizes else {}
    return inventory.collect(containers, networks, volumes, sizes)


async def remove_resources(
    gateway: DockerGateway,
    resources: Iterable[Resource],
    hub_container: str = "",
    stop_timeout: int = DEFAULT_STOP_TIMEOUT,
) -> RemovalReport:
    """Stop and remove the containers, then remove the networks (free only once their containers are gone), then
    the volumes. Containers and networks are addressed by id, so one started anew under the same name meanwhile is
    left alone. A failure is reported and the rest still goes."""
    report = RemovalReport()
    by_kind: dict[str, list[Resource]] = {}
    for resource in resources:
        by_kind.setdefault(resource.kind, []).append(resource)
    steps = (
        (inventory.KIND_CONTAINER, lambda r: _remove_container(gateway, r.id, stop_timeout)),
        (inventory.KIND_NETWORK, lambda r: network.remove_user_network(gateway, r.id, hub_container)),
        (inventory.KIND_VOLUME, lambda r: gateway.remove_volume(r.name)),
    )
    for kind, remove in steps:
        batch = by_kind.get(kind, [])
        outcomes = await asyncio.gather(*(remove(r) for r in batch), return_exceptions=True)
        for resource, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                report.failed.append(f"{kind} {resource.name}: {outcome}")
            else:
                report.removed.append(f"{kind} {resource.name}")
    return report


async def _remove_container(gateway: DockerGateway, container_id: str, stop_timeout: int) -> None:
    # Stopping first gives the server (and the database) time to shut down cleanly before removal kills them.
    await gateway.stop_container(container_id, stop_timeout)
    await gateway.remove_container(container_id)


async def delete_user_resources(
    gateway: DockerGateway,
    owner: names.Owner,
    templates: names.NameTemplates,
    remove_volumes: bool,
    hub_container: str = "",
    *,
    servername: str | None = None,
    stop_timeout: int = DEFAULT_STOP_TIMEOUT,
) -> list[str]:
    """Remove the containers and networks of ``owner`` (a hub's user) and, only if ``remove_volumes``, their
    volumes; return what was removed (``"container jupyter-alice"``, ...).

    What is the owner's is decided by :func:`.inventory.is_owned_by`: the hub and user identity labels, or for
    objects without an identity the user name and this hub's exact names. Another hub's objects, and those of a deleted
    user who had the same name, are never touched. ``servername`` limits it to one server's objects (a user-wide
    home volume has server ``""``, so it goes only with the default server's). Raises :class:`DockerGatewayError`
    after trying everything if anything could not be removed.
    """
    # By identity (this release's objects, under any name the user had) and by name (earlier ones), then
    # checked in full by select_for_owner.
    found = await _find(gateway, [*_identity_filters(owner), [f"{names.LABEL_USER}={owner.user}"]])
    chosen = inventory.select_for_owner(found, owner, templates, servername=servername, include_volumes=remove_volumes)
    report = await remove_resources(gateway, chosen, hub_container, stop_timeout)
    if report.failed:
        raise DockerGatewayError(
            f"could not remove all of user {owner.user}'s objects: {'; '.join(report.failed)} "
            f"(removed: {', '.join(report.removed) or 'nothing'})"
        )
    return report.removed


async def volumes_of(gateway: DockerGateway, owner: names.Owner) -> list[Resource]:
    """The volumes this hub made for this user (by their identity), under whatever name the user then had."""
    found = await _find(gateway, _identity_filters(owner), volumes_only=True)
    return [r for r in found if r.hub == owner.hub and r.identity.same_user(owner.identity)]


def _identity_filters(owner: names.Owner) -> list[list[str]]:
    """Label queries for this hub's objects of this user's id, and of their creation time (what ``prepare``
    records, knowing no id)."""
    hub = f"{names.LABEL_HUB}={owner.hub}"
    queries = []
    if owner.user_id:
        queries.append([hub, f"{names.LABEL_USER_ID}={owner.user_id}"])
    if owner.user_created:
        queries.append([hub, f"{names.LABEL_USER_CREATED}={owner.user_created}"])
    return queries


async def _find(gateway: DockerGateway, queries: list[list[str]], volumes_only: bool = False) -> list[Resource]:
    """The project's objects (or only volumes) matching any of the label queries, each once."""

    async def one(query: list[str]) -> list[Resource]:
        if volumes_only:
            return inventory.collect([], [], await gateway.list_volumes([f"{names.LABEL_MANAGED}=true", *query]))
        return await list_resources(gateway, query)

    results = await asyncio.gather(*(one(query) for query in queries))
    return list({(r.kind, r.id): r for found in results for r in found}.values())
