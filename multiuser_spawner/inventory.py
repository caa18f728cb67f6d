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
#: a Swarm service: on a swarm, what a container is on one host
KIND_SERVICE = "service"
#: what runs: a container on one host, a service on a swarm
RUNNING_KINDS = (KIND_CONTAINER, KIND_SERVICE)
_KIND_ORDER = {KIND_CONTAINER: 0, KIND_SERVICE: 0, KIND_NETWORK: 1, KIND_VOLUME: 2}
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
REASON_NAME_GIVEN_ANEW = "user deleted, name given to a new user"


@dataclass(frozen=True)
class Resource:
    """One Docker object made by the spawner, as its labels describe it."""

    kind: str
    name: str
    id: str
    user: str
    server: str
    role: str
    #: the hub that made it (its prefix); "" for objects of releases that did not record it
    hub: str = ""
    #: the hub's id of the user; "" for objects of releases that did not record it
    user_id: str = ""
    #: when the hub created the user; "" for objects of releases that did not record it
    user_created: str = ""
    #: a service's key (``db``, ``cache``) for its container and volume; "" for other objects
    service: str = ""
    #: containers and services: Docker's state (``running``, ``exited``, ...); a service's is its task's
    state: str = ""
    #: volumes only: bytes used, ``None`` when Docker did not say
    size: int | None = None
    #: containers only: why a stopped one stopped, when it was not asked to (``oom-killed (512M)``); services:
    #: Swarm's reason when their task ended or cannot run
    note: str = ""
    #: on a swarm: the node (host name) a service's task runs on, or that holds a volume; "" elsewhere or unknown
    node: str = ""

    @property
    def identity(self) -> names.Identity:
        """The user for good; unknown for objects of releases that did not record it."""
        return names.Identity(self.user_id, self.user_created)

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
        "hub": labels.get(names.LABEL_HUB, ""),
        "user_id": labels.get(names.LABEL_USER_ID, ""),
        "user_created": labels.get(names.LABEL_USER_CREATED, ""),
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
    """Whether this hub (identified by its prefix) made the object.

    Several hubs may share one Docker engine, and prefixes may be prefixes of each other (``jupyter`` and
    ``jupyter-staging``), so a name is never enough. An object with a hub label is this hub's exactly when the
    label is ``prefix``. One made by a release that did not record the hub is this hub's only when its name is
    exactly what this hub's templates give for its labels; when a template cannot be filled here it is left alone.
    """
    if not resource.user:
        return False
    if resource.hub:
        return resource.hub == prefix
    expected = expected_name(resource, prefix, templates)
    return expected is not None and resource.name == expected


def of_hub(resources: Iterable[Resource], prefix: str, templates: names.NameTemplates) -> list[Resource]:
    return [r for r in resources if belongs_to_hub(r, prefix, templates)]


def is_owned_by(resource: Resource, owner: names.Owner, templates: names.NameTemplates) -> bool:
    """Whether the object is this hub user's: by hub and user id when it carries them (so a renamed user's
    objects are found, and a deleted user's are never taken for a new user's of the same name), else (objects
    of earlier releases) by user name and this hub's exact name for it."""
    if resource.hub and resource.hub != owner.hub:
        return False
    same = resource.identity.same_user(owner.identity)
    if same is not None:
        return same
    return resource.user == owner.user and belongs_to_hub(resource, owner.hub, templates)


@dataclass(frozen=True)
class HubUsers:
    """What the hub says about its users, as far as gc needs it."""

    #: ``(user name, server)`` of every server running, starting or stopping, with the user's identity as the
    #: server's state recorded it (unknown for a server started before identities were recorded)
    running: Mapping[tuple[str, str], names.Identity]
    #: every user's name; ``None`` when not asked for
    names: frozenset[str] | None = None
    #: user name -> identity, for the users whose servers' state recorded it
    ids: Mapping[str, names.Identity] | None = None


def find_orphans(resources: Iterable[Resource], hub: HubUsers) -> list[Orphan]:
    """What may be removed.

    Containers (services, on a swarm) and networks are orphans when the hub has no running (or starting, or
    stopping) server behind them. Volumes hold users' files, so they are orphans only when the hub's users were
    asked for (``hub.names``) and the volume's user is gone: by id when the volume carries one (a renamed user keeps
    it), never for a volume without an id (see :func:`unsure_volumes`).
    """
    orphans = []
    for resource in resources:
        if resource.kind in (*RUNNING_KINDS, KIND_NETWORK):
            if not _has_running_server(resource, hub.running):
                orphans.append(Orphan(resource, REASON_NO_SERVER))
        elif resource.kind == KIND_VOLUME and hub.names is not None:
            reason = _why_user_is_gone(resource, hub.names, hub.ids or {})
            if reason:
                orphans.append(Orphan(resource, reason))
    return orphans


def _has_running_server(resource: Resource, running: Mapping[tuple[str, str], names.Identity]) -> bool:
    for (_, server), identity in running.items():
        if server == resource.server and resource.identity.same_user(identity):
            return True  # the same user's server, possibly under a new name
    running_identity = running.get((resource.user, resource.server))
    if running_identity is None:
        return False
    # A server of that name runs: it is this object's unless they are known to be different users (a user of the
    # same name, deleted, whose leftovers must not block or be kept for the new one).
    return resource.identity.same_user(running_identity) is not False


def _why_user_is_gone(resource: Resource, user_names: frozenset[str], ids: Mapping[str, names.Identity]) -> str:
    if not resource.user or not resource.identity.known:
        return ""  # unknown owner, or a volume without an identity: see unsure_volumes
    if any(resource.identity.same_user(identity) for identity in ids.values()):
        return ""  # the user exists, perhaps renamed
    if resource.user not in user_names:
        return REASON_DELETED_USER
    if resource.user in ids and resource.identity.same_user(ids[resource.user]) is False:
        return REASON_NAME_GIVEN_ANEW
    return ""  # a user of that name exists and who they are is unknown: keep


def unsure_volumes(resources: Iterable[Resource], user_names: frozenset[str]) -> list[Resource]:
    """Volumes of earlier releases (no user id) whose user name the hub no longer has. The user may have been
    deleted, or renamed (a rename keeps the user but not the name), so gc never removes them; an admin decides."""
    return [
        r for r in resources if r.kind == KIND_VOLUME and r.user and not r.identity.known and r.user not in user_names
    ]


def select_for_owner(
    resources: Iterable[Resource],
    owner: names.Owner,
    templates: names.NameTemplates,
    *,
    servername: str | None = None,
    include_volumes: bool = False,
) -> list[Resource]:
    """One hub user's objects (or one server's, when ``servername`` is given), volumes only when asked for."""
    chosen = []
    for r in resources:
        if not is_owned_by(r, owner, templates):
            continue
        if servername is not None and r.server != servername:
            continue
        if r.kind == KIND_VOLUME and not include_volumes:
            continue
        chosen.append(r)
    return chosen


def names_kept_through_rename(
    wanted: names.ResourceNames, volumes: Iterable[Resource], *, home_server: str, server: str
) -> names.ResourceNames:
    """``wanted`` with each volume the user already has (``volumes``: theirs by hub and user id) in place of the
    name their current user name gives, so a user renamed in the hub keeps their home and their services' data.
    A volume that already has the wanted name wins; several others of the same role are an admin's to sort out."""
    found = [v for v in volumes if v.kind == KIND_VOLUME]

    def kept(name: str, role: str, on_server: str, service: str = "") -> str:
        candidates = {v.name for v in found if (v.role, v.server, v.service) == (role, on_server, service)}
        if not name or not candidates or name in candidates:
            return name
        if len(candidates) > 1:
            raise ValueError(
                f"the user has several {role} volumes from earlier names ({', '.join(sorted(candidates))}) and "
                f"none named {name}: an admin must keep one (docker volume rm the others, or copy them together)"
            )
        return candidates.pop()

    return names.ResourceNames(
        container=wanted.container,
        home_volume=kept(wanted.home_volume, names.ROLE_HOME, home_server),
        network=wanted.network,
        services={
            key: names.ServiceNames(n.container, kept(n.volume, names.ROLE_SERVICE_DATA, server, key))
            for key, n in wanted.services.items()
        },
    )


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
                # "services" only on a swarm, so the document of one host stays as it was
                entry.setdefault(f"{r.kind}s", []).append(_json_item(r))
            server_list.append(entry)
        users.append({"name": user, "servers": server_list})
    return {"users": users}


def _json_item(resource: Resource) -> dict[str, Any]:
    item = asdict(resource)
    for key in ("kind", "user", "server"):  # already given by where the item sits
        del item[key]
    if not resource.service:
        del item["service"]
    if resource.kind not in RUNNING_KINDS:
        del item["state"]
    if resource.kind != KIND_VOLUME:
        del item["size"]
    if not resource.note:
        del item["note"]
    if not resource.node:
        del item["node"]
    return item
