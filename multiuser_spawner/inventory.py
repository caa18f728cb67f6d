"""The project's Docker objects, read from their labels and grouped per user and server.

Pure functions only: they take the summaries Docker's list calls return (plain dicts) and decide what belongs to
whom, what belongs to this hub, and what is an orphan. The CLI and :mod:`.cleanup` do the talking to Docker.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from . import names

KIND_CONTAINER = "container"
KIND_NETWORK = "network"
KIND_VOLUME = "volume"
_KIND_ORDER = {KIND_CONTAINER: 0, KIND_NETWORK: 1, KIND_VOLUME: 2}
# Within a kind, the notebook's object before its services'.
_ROLE_ORDER = {names.ROLE_NOTEBOOK: 0, names.ROLE_HOME: 0, names.ROLE_SERVICE: 1, names.ROLE_SERVICE_DATA: 1}

# Which name template gives the name of an object of each role.
_TEMPLATE_OF_ROLE = {
    names.ROLE_NOTEBOOK: "container",
    names.ROLE_SERVICE: "service_container",
    names.ROLE_NETWORK: "network",
    names.ROLE_HOME: "home_volume",
    names.ROLE_SERVICE_DATA: "service_volume",
}
# The one database of releases before per-user services is read as the service "db".
_LEGACY_ROLES = {names.ROLE_DATABASE: names.ROLE_SERVICE, names.ROLE_DATABASE_DATA: names.ROLE_SERVICE_DATA}

REASON_NO_SERVER = "no running server"
REASON_DELETED_USER = "user no longer exists"


@dataclass(frozen=True)
class Resource:
    """One Docker object made by the spawner, as its labels describe it."""

    kind: str
    name: str
    id: str
    user: str
    server: str
    role: str
    #: a service's key (``db``, ``cache``) for its container and volume; "" for other objects
    service: str = ""
    #: containers only: Docker's state (``running``, ``exited``, ...)
    state: str = ""
    #: volumes only: bytes used, ``None`` when Docker did not say
    size: int | None = None
    #: containers only: why a stopped one stopped, when it was not asked to (``oom-killed (512M)``)
    note: str = ""

    @property
    def sort_key(self) -> tuple[str, str, int, int, str, str, str]:
        return (
            self.user,
            self.server,
            _KIND_ORDER.get(self.kind, 9),
            _ROLE_ORDER.get(self.role, 9),
            self.role,
            self.service,
            self.name,
        )


@dataclass(frozen=True)
class Orphan:
    resource: Resource
    reason: str


def _labels(summary: Mapping[str, Any]) -> Mapping[str, str]:
    # Docker gives ``null`` rather than ``{}`` for an object without labels.
    return summary.get("Labels") or {}


def _owner(labels: Mapping[str, str]) -> dict[str, str]:
    role = labels.get(names.LABEL_ROLE, "")
    service = labels.get(names.LABEL_SERVICE, "")
    if role in _LEGACY_ROLES:
        role, service = _LEGACY_ROLES[role], service or names.LEGACY_DATABASE_SERVICE
    return {
        "user": labels.get(names.LABEL_USER, ""),
        "server": labels.get(names.LABEL_SERVER, ""),
        "role": role,
        "service": service,
    }


def from_container(summary: Mapping[str, Any]) -> Resource:
    """A container as ``GET /containers/json`` lists it."""
    container_names = summary.get("Names") or [summary.get("Id", "")]
    return Resource(
        kind=KIND_CONTAINER,
        name=container_names[0].lstrip("/"),
        id=summary.get("Id", ""),
        state=summary.get("State", ""),
        **_owner(_labels(summary)),
    )


def from_network(summary: Mapping[str, Any]) -> Resource:
    return Resource(kind=KIND_NETWORK, name=summary["Name"], id=summary.get("Id", ""), **_owner(_labels(summary)))


def from_volume(summary: Mapping[str, Any], sizes: Mapping[str, int]) -> Resource:
    # Volumes have no id: their name is what Docker identifies them by.
    name = summary["Name"]
    return Resource(kind=KIND_VOLUME, name=name, id=name, size=sizes.get(name), **_owner(_labels(summary)))


def volume_sizes(disk_usage: Mapping[str, Any]) -> dict[str, int]:
    """Bytes used per volume name, from Docker's ``GET /system/df``. Docker reports -1 for a size it has not
    computed (e.g. a volume driver that cannot tell); those are left out."""
    sizes = {}
    for volume in disk_usage.get("Volumes") or []:
        size = (volume.get("UsageData") or {}).get("Size", -1)
        if size is not None and size >= 0:
            sizes[volume["Name"]] = int(size)
    return sizes


def collect(
    containers: Iterable[Mapping[str, Any]],
    networks: Iterable[Mapping[str, Any]],
    volumes: Iterable[Mapping[str, Any]],
    sizes: Mapping[str, int] | None = None,
) -> list[Resource]:
    """Every listed object that carries the project's label, sorted by user, server and kind."""
    found = [from_container(c) for c in containers if _is_managed(c)]
    found += [from_network(n) for n in networks if _is_managed(n)]
    found += [from_volume(v, sizes or {}) for v in volumes if _is_managed(v)]
    return sorted(found, key=lambda r: r.sort_key)


def _is_managed(summary: Mapping[str, Any]) -> bool:
    # The list calls already filter on the label; checking again keeps these functions right on any input.
    return _labels(summary).get(names.LABEL_MANAGED) == "true"


def expected_name(resource: Resource, prefix: str, templates: names.NameTemplates) -> str | None:
    """The name this hub's templates give an object of this role, user and server; ``None`` when they cannot
    tell (an unknown role, or a template using fields other than those of :func:`names.template_fields`)."""
    attribute = _TEMPLATE_OF_ROLE.get(resource.role)
    template = getattr(templates, attribute) if attribute else ""
    if not template:
        return None
    try:
        fields = {**names.template_fields(prefix, resource.user, resource.server), "service": resource.service}
        return names.render_name(template, fields, attribute)
    except ValueError:
        return None


def belongs_to_hub(resource: Resource, prefix: str, templates: names.NameTemplates) -> bool:
    """Whether this hub made the object: its name is exactly what the hub's templates give for its labels.

    Several hubs may share one Docker engine, and prefixes may be prefixes of each other (``jupyter`` and
    ``jupyter-staging``), so a name merely starting with the prefix could be another hub's user's object.
    Only when a template cannot be filled here does the prefix alone decide.
    """
    if not resource.user:
        return False
    expected = expected_name(resource, prefix, templates)
    if expected is None:
        return resource.name.startswith(f"{prefix}-")
    return resource.name == expected


def of_hub(resources: Iterable[Resource], prefix: str, templates: names.NameTemplates) -> list[Resource]:
    return [r for r in resources if belongs_to_hub(r, prefix, templates)]


def find_orphans(
    resources: Iterable[Resource],
    running: frozenset[tuple[str, str]] | set[tuple[str, str]],
    existing_users: frozenset[str] | set[str] | None = None,
) -> list[Orphan]:
    """What may be removed.

    Containers and networks are orphans when the hub has no running (or starting, or stopping) server
    ``(user, server)`` behind them. Volumes hold users' files, so they are orphans only when ``existing_users``
    is given and their user is not in it; a volume of an existing user, or one whose owner is unknown, never is.
    """
    orphans = []
    for resource in resources:
        if resource.kind in (KIND_CONTAINER, KIND_NETWORK):
            if (resource.user, resource.server) not in running:
                orphans.append(Orphan(resource, REASON_NO_SERVER))
        elif (
            resource.kind == KIND_VOLUME
            and existing_users is not None
            and resource.user
            and resource.user not in existing_users
        ):
            orphans.append(Orphan(resource, REASON_DELETED_USER))
    return orphans


def select_for_user(
    resources: Iterable[Resource],
    username: str,
    *,
    servername: str | None = None,
    include_volumes: bool = False,
    name_prefix: str = "",
) -> list[Resource]:
    """One user's objects (or one server's, when ``servername`` is given), volumes only when asked for."""
    chosen = []
    for r in resources:
        if r.user != username or not r.name.startswith(name_prefix):
            continue
        if servername is not None and r.server != servername:
            continue
        if r.kind == KIND_VOLUME and not include_volumes:
            continue
        chosen.append(r)
    return chosen


def group(resources: Iterable[Resource]) -> dict[str, dict[str, list[Resource]]]:
    """user → server → objects, in sorted order. A user-wide object (the home volume) sits under server ``""``."""
    grouped: dict[str, dict[str, list[Resource]]] = {}
    for r in sorted(resources, key=lambda r: r.sort_key):
        grouped.setdefault(r.user, {}).setdefault(r.server, []).append(r)
    return grouped


def as_json(resources: Iterable[Resource]) -> dict[str, Any]:
    """The ``ls --json`` document: users, each with servers, each with containers, networks and volumes."""
    users = []
    for user, servers in group(resources).items():
        server_list = []
        for server, items in servers.items():
            entry: dict[str, Any] = {"name": server, "containers": [], "networks": [], "volumes": []}
            for r in items:
                entry[f"{r.kind}s"].append(_json_item(r))
            server_list.append(entry)
        users.append({"name": user, "servers": server_list})
    return {"users": users}


def _json_item(resource: Resource) -> dict[str, Any]:
    item = asdict(resource)
    for key in ("kind", "user", "server"):  # already given by where the item sits
        del item[key]
    if not resource.service:
        del item["service"]
    if resource.kind != KIND_CONTAINER:
        del item["state"]
    if resource.kind != KIND_VOLUME:
        del item["size"]
    if not resource.note:
        del item["note"]
    return item
