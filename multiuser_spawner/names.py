"""Names and labels of every Docker object the spawner makes.

Pure functions only. A name must be valid for Docker, at most 63 characters (so it also works as a DNS label on a
user network), and never shared by two users or two servers. The rules below are part of the project's contract:
deployed volumes are found again by these names, so changing a rule renames (and so orphans) users' data.
``tests/data/recorded_names.json`` pins them.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: Label keys. Every object the spawner creates carries ``LABEL_MANAGED``, so the CLI and the shared container view
#: can find the project's objects without knowing any name template.
LABEL_PREFIX = "org.multiuser-spawner"
LABEL_MANAGED = f"{LABEL_PREFIX}.managed"
#: the identity of the hub that made the object (its ``prefix``): several hubs may share one Docker engine, and
#: each touches only objects whose hub label is exactly its own
LABEL_HUB = f"{LABEL_PREFIX}.hub"
#: the user's name when the object was made (a rename in the hub does not change it)
LABEL_USER = f"{LABEL_PREFIX}.user"
#: the hub's id of the user (JupyterHub's ``User.id``): kept through a rename, so it says whose data a volume holds
LABEL_USER_ID = f"{LABEL_PREFIX}.user-id"
#: when the hub created the user: a hub database on SQLite gives a deleted user's id to the next user created, so
#: the id and this time together tell a user from a later one of the same id
LABEL_USER_CREATED = f"{LABEL_PREFIX}.user-created"
LABEL_SERVER = f"{LABEL_PREFIX}.server"
LABEL_ROLE = f"{LABEL_PREFIX}.role"
#: the key of a per-user service (``db``, ``cache``) in ``services``, on its container and its volume
LABEL_SERVICE = f"{LABEL_PREFIX}.service"
#: a service's generated password, kept on its data volume so that it lives exactly as long as the data
LABEL_PASSWORD = f"{LABEL_PREFIX}.password"
#: where releases before per-user services kept the database's password (still read, never written)
LABEL_DB_PASSWORD = f"{LABEL_PREFIX}.database-password"

#: where a server's state (which the hub's API shows with the admin:server_state scope) records the user's id and
#: creation time: the API shows no user ids otherwise, and ``gc`` must know a renamed user by them
STATE_USER_ID = "multiuser_user_id"
STATE_USER_CREATED = "multiuser_user_created"

ROLE_NOTEBOOK = "notebook"
ROLE_HOME = "home"
ROLE_NETWORK = "network"
ROLE_SERVICE = "service"
ROLE_SERVICE_DATA = "service-data"
#: a short-lived container that prepares a volume (the home's ownership fix)
ROLE_HELPER = "helper"
#: a one-shot Swarm task the hub runs on a node (removing a deleted user's volume there)
ROLE_JOB = "job"
#: a volume (one per node, on a swarm with shared volumes) that is the shared export's root, from which the
#: spawner makes each user volume's directory; it belongs to the hub, not to a user
ROLE_SHARED_EXPORT = "shared-export"
#: the roles of the one database of releases before per-user services: read as the service ``db``
ROLE_DATABASE = "database"
ROLE_DATABASE_DATA = "database-data"
LEGACY_DATABASE_SERVICE = "db"

MAX_NAME_LENGTH = 63
MAX_USER_SLUG = 24
MAX_SERVER_SLUG = 16
MAX_SERVICE_NAME = 16
_HASH_LENGTH = 8

# A slug kept as it is: lowercase letters and digits in runs joined by single dashes. It can never contain "--",
# which every escaped slug does, so a kept name and an escaped name never meet.
_PLAIN_SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
_UNSAFE_RUN = re.compile(r"[^a-z0-9]+")
_DOCKER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_PREFIX = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9-]*")
#: a service key: it becomes part of names and a DNS alias, so a plain slug
SERVICE_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")


def safe_slug(raw: str, max_length: int) -> str:
    """Map any string to ``[a-z0-9-]`` of at most ``max_length`` characters, injectively.

    A string that is already a plain slug and short enough is kept, so ``alice`` stays ``alice``. Anything else
    becomes a readable stem, ``--`` and a hash of the original: ``Alice.B`` → ``alice-b--3b1c9e2a``.
    """
    if len(raw) <= max_length and _PLAIN_SLUG.fullmatch(raw):
        return raw
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LENGTH]
    stem_budget = max_length - len(digest) - 2
    # Accents are folded (é → e) so the readable part stays readable; the hash keeps the name unique.
    ascii_form = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode("ascii")
    stem = _UNSAFE_RUN.sub("-", ascii_form.lower()).strip("-")[:stem_budget].strip("-") or "x"
    return f"{stem}--{digest}"


def validate_prefix(prefix: str) -> str:
    """The prefix starts every name: letters, digits and dashes, starting with a letter or digit. A name that a
    long prefix makes too long is shortened with a hash (:func:`fit_name`), so any prefix DockerSpawner takes works."""
    if not _PREFIX.fullmatch(prefix) or len(prefix) > MAX_NAME_LENGTH - 2 * _HASH_LENGTH:
        raise ValueError(
            f"prefix {prefix!r} must be letters, digits and dashes, starting with a letter or digit, "
            f"at most {MAX_NAME_LENGTH - 2 * _HASH_LENGTH} characters"
        )
    return prefix


def validate_service_name(name: str) -> str:
    """A service's key names its container, volume and (by default) its host name on the private network."""
    if len(name) > MAX_SERVICE_NAME or not SERVICE_NAME.fullmatch(name):
        raise ValueError(
            f"service name {name!r} must be 1-{MAX_SERVICE_NAME} lowercase letters, digits and single dashes, "
            "starting with a letter"
        )
    return name


def fit_name(name: str) -> str:
    """``name`` as it is when Docker takes it at our length bound; a longer one is cut and ends in a hash of the
    whole name, so two long names that share a beginning stay apart and the same name always gives the same."""
    if len(name) <= MAX_NAME_LENGTH:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_LENGTH]
    return f"{name[: MAX_NAME_LENGTH - _HASH_LENGTH - 1]}-{digest}"


def is_valid_docker_name(name: str) -> bool:
    """What Docker accepts for container, volume and network names, within our length bound."""
    return len(name) <= MAX_NAME_LENGTH and bool(_DOCKER_NAME.fullmatch(name))


def template_fields(prefix: str, username: str, servername: str) -> dict[str, str]:
    """The fields the name templates may use.

    ``{user}`` and ``{server}`` are slugs; ``{server_suffix}`` is ``""`` for the default server and ``.{server}``
    for a named one. The separators ``.`` (server) and ``_`` (kind of object) never occur in a slug, so no user's
    name can be read as another user's server or object.
    """
    user = safe_slug(username, MAX_USER_SLUG)
    server = safe_slug(servername, MAX_SERVER_SLUG) if servername else ""
    return {
        "prefix": prefix,
        "user": user,
        "server": server,
        "server_suffix": f".{server}" if server else "",
    }


@dataclass(frozen=True)
class NameTemplates:
    """Templates for each kind of object, filled from :func:`template_fields` (and ``{service}``, a service's
    key, for the service templates)."""

    container: str = "{prefix}-{user}{server_suffix}"
    home_volume: str = "{prefix}-{user}_home"
    network: str = "{prefix}-{user}{server_suffix}_net"
    service_container: str = "{prefix}-{user}{server_suffix}_{service}"
    service_volume: str = "{prefix}-{user}{server_suffix}_{service}"


@dataclass(frozen=True)
class ServiceNames:
    container: str
    volume: str


@dataclass(frozen=True)
class ResourceNames:
    """The names of one user server's objects. A server remembers them in its state, so a template changed while
    it runs never loses its objects."""

    container: str
    home_volume: str
    network: str
    services: dict[str, ServiceNames]

    def as_state(self) -> dict[str, object]:
        return {
            "container": self.container,
            "home_volume": self.home_volume,
            "network": self.network,
            "services": {key: [n.container, n.volume] for key, n in self.services.items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, object]) -> ResourceNames:
        services = state.get("services") or {}
        return cls(
            container=str(state["container"]),
            home_volume=str(state.get("home_volume") or ""),
            network=str(state["network"]),
            services={key: ServiceNames(*pair) for key, pair in services.items()},  # type: ignore[union-attr]
        )


def render_name(template: str, fields: dict[str, str], setting: str) -> str:
    """Fill one template and check the result, naming the setting when it is wrong. A name longer than Docker
    takes is shortened with a hash of it (:func:`fit_name`)."""
    try:
        name = template.format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"{setting}: cannot fill template {template!r}: {e!r}") from None
    name = fit_name(name)
    if not is_valid_docker_name(name):
        raise ValueError(
            f"{setting}: template {template!r} gives {name!r}, which is not a valid Docker name "
            f"(letters, digits, '_', '.', '-', starting with a letter or digit)"
        )
    return name


def service_names(templates: NameTemplates, fields: dict[str, str], service: str) -> ServiceNames:
    with_service = {**fields, "service": service}
    return ServiceNames(
        container=render_name(templates.service_container, with_service, "service_container_name_template"),
        volume=render_name(templates.service_volume, with_service, "service_volume_name_template"),
    )


def resource_names(templates: NameTemplates, fields: dict[str, str], services: Iterable[str] = ()) -> ResourceNames:
    """All of one server's names; ``fields`` holds at least :func:`template_fields`."""
    return ResourceNames(
        container=render_name(templates.container, fields, "name_template"),
        home_volume=render_name(templates.home_volume, fields, "home_volume_name_template")
        if templates.home_volume
        else "",
        network=render_name(templates.network, fields, "network_name_template"),
        services={key: service_names(templates, fields, key) for key in services},
    )


@dataclass(frozen=True)
class Owner:
    """Whose an object is: one hub, one of its users (by name and by the hub's id) and one of their servers."""

    hub: str
    user: str
    user_id: str
    server: str = ""
    #: when the hub created the user (ISO 8601); "" when unknown
    user_created: str = ""

    def labels(self, role: str, service: str = "") -> dict[str, str]:
        return labels(role, self, service)

    @property
    def identity(self) -> Identity:
        return Identity(self.user_id, self.user_created)


@dataclass(frozen=True)
class Identity:
    """What names one hub user for good, whatever they are called: their id and when the hub created them (see
    :data:`LABEL_USER_CREATED`). Either may be unknown (""): objects of earlier releases record neither, and
    ``multiuser-spawner prepare`` knows no ids (the hub's API does not show them)."""

    user_id: str = ""
    created: str = ""

    def same_user(self, other: Identity) -> bool | None:
        """False when an id or creation time both know differs, True when they agree on what both know, None
        when they know nothing in common (then only the user name can decide)."""
        compared = [(a, b) for a, b in ((self.user_id, other.user_id), (self.created, other.created)) if a and b]
        if not compared:
            return None
        return all(a == b for a, b in compared)

    @property
    def known(self) -> bool:
        return bool(self.user_id or self.created)

    def __str__(self) -> str:
        parts = [f"id {self.user_id}" if self.user_id else "", f"created {self.created}" if self.created else ""]
        return ", ".join(p for p in parts if p) or "identity unknown"


def labels(role: str, owner: Owner, service: str = "") -> dict[str, str]:
    """Labels for an object of ``role`` owned by ``owner`` (volumes of a user carry server ``""``), and of one
    service when it is a service's container or volume."""
    result = {
        LABEL_MANAGED: "true",
        LABEL_HUB: owner.hub,
        LABEL_USER: owner.user,
        LABEL_USER_ID: owner.user_id,
        LABEL_USER_CREATED: owner.user_created,
        LABEL_SERVER: owner.server,
        LABEL_ROLE: role,
    }
    if service:
        result[LABEL_SERVICE] = service
    return result


def owner_from_labels(found: Mapping[str, str]) -> Owner:
    """The owner an object's labels name (``""`` for what an earlier release did not record)."""
    return Owner(
        hub=found.get(LABEL_HUB, ""),
        user=found.get(LABEL_USER, ""),
        user_id=found.get(LABEL_USER_ID, ""),
        server=found.get(LABEL_SERVER, ""),
        user_created=found.get(LABEL_USER_CREATED, ""),
    )


def claim_problem(found: Mapping[str, str], owner: Owner) -> str | None:
    """Why an object of ours, found under a name this owner's templates give, is not the owner's; ``None`` when
    it is. The server is not compared: a user-wide volume serves every server.

    - Another hub's object (hub label not exactly ``owner.hub``) is never the owner's, whatever its name.
    - With a user identity (:class:`Identity`), it decides: the same user, even renamed, or a deleted user of
      the same name, whose data a new user must never get silently.
    - Objects of earlier releases carry neither hub nor identity: found under this hub's exact name and labelled
      with this user's name, they are the user's, as they always were.
    """
    if found.get(LABEL_MANAGED) != "true":
        return None  # not made by the spawner at all: whether such an object may be used is decided elsewhere
    hub = found.get(LABEL_HUB)
    if hub is not None and hub != owner.hub:
        return f"it belongs to another hub ({LABEL_HUB}={hub!r})"
    theirs = owner_from_labels(found)
    same = theirs.identity.same_user(owner.identity)
    if same is False:
        return (
            f"it belongs to the user {theirs.user!r} ({theirs.identity}), not to this user {owner.user!r} "
            f"({owner.identity}): a user of this name was deleted and the name given anew"
        )
    if same is None and theirs.user != owner.user:
        return f"it belongs to the user {theirs.user!r}, not to {owner.user!r}"
    return None


#: what Swarm takes for a service or network name: letters and digits, joined by runs of '-' and '_'
_SWARM_NAME = re.compile(r"[a-zA-Z0-9](?:[-_]*[a-zA-Z0-9]+)*")


def swarm_name(name: str, setting: str) -> str:
    """A valid Swarm service or network name for the Docker name ``name``. Swarm refuses ``.``; it becomes ``__``,
    which no slug contains (slugs are ``[a-z0-9-]``) and the default templates never write, so two servers'
    names stay apart; a result past the length bound is shortened with a hash (:func:`fit_name`)."""
    swarm = fit_name(name.replace(".", "__"))
    if not _SWARM_NAME.fullmatch(swarm):
        raise ValueError(
            f"{setting}: {name!r} gives {swarm!r}, which Swarm refuses as a service or network name "
            "(letters and digits joined by '-' or '_')"
        )
    return swarm


def swarm_resource_names(resolved: ResourceNames) -> ResourceNames:
    """A server's names with its services and network named for Swarm; volume names (which may hold ``.``) stay,
    so a user's volumes keep the names they have on one host."""
    return ResourceNames(
        container=swarm_name(resolved.container, "name_template"),
        home_volume=resolved.home_volume,
        network=swarm_name(resolved.network, "network_name_template"),
        services={
            key: ServiceNames(swarm_name(s.container, "service_container_name_template"), s.volume)
            for key, s in resolved.services.items()
        },
    )
