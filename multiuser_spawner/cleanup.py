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

    What is the owner's is decided by :func:`.inventory.is_owned_by`: the hub and user id labels, or for objects
    of earlier releases the user name and this hub's exact names. Another hub's objects, and those of a deleted
    user who had the same name, are never touched. ``servername`` limits it to one server's objects (a user-wide
    home volume has server ``""``, so it goes only with the default server's). Raises :class:`DockerGatewayError`
    after trying everything if anything could not be removed.
    """
    # Two label queries: by id (this release's objects, under any name the user had) and by name (earlier ones);
    # the id's owner is then checked in full (a hub on SQLite gives a deleted user's id again).
    by_id, by_name = await asyncio.gather(
        list_resources(gateway, [f"{names.LABEL_HUB}={owner.hub}", f"{names.LABEL_USER_ID}={owner.user_id}"]),
        list_resources(gateway, [f"{names.LABEL_USER}={owner.user}"]),
    )
    found = list({(r.kind, r.id): r for r in [*by_id, *by_name]}.values())
    chosen = inventory.select_for_owner(found, owner, templates, servername=servername, include_volumes=remove_volumes)
    report = await remove_resources(gateway, chosen, hub_container, stop_timeout)
    if report.failed:
        raise DockerGatewayError(
            f"could not remove all of user {owner.user}'s objects: {'; '.join(report.failed)} "
            f"(removed: {', '.join(report.removed) or 'nothing'})"
        )
    return report.removed


async def volumes_of(gateway: DockerGateway, owner: names.Owner) -> list[Resource]:
    """The volumes this hub made for this user (by hub and user id), under whatever name the user then had."""
    filters = [
        f"{names.LABEL_MANAGED}=true",
        f"{names.LABEL_HUB}={owner.hub}",
        f"{names.LABEL_USER_ID}={owner.user_id}",
    ]
    return inventory.collect([], [], await gateway.list_volumes(filters))
