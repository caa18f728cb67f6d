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
from dataclasses import dataclass

#: Label keys. Every object the spawner creates carries ``LABEL_MANAGED``, so the CLI and the shared container view
#: can find the project's objects without knowing any name template.
LABEL_PREFIX = "org.multiuser-spawner"
LABEL_MANAGED = f"{LABEL_PREFIX}.managed"
LABEL_USER = f"{LABEL_PREFIX}.user"
LABEL_SERVER = f"{LABEL_PREFIX}.server"
LABEL_ROLE = f"{LABEL_PREFIX}.role"
LABEL_DB_PASSWORD = f"{LABEL_PREFIX}.database-password"

ROLE_NOTEBOOK = "notebook"
ROLE_HOME = "home"
ROLE_NETWORK = "network"
ROLE_DATABASE = "database"
ROLE_DATABASE_DATA = "database-data"

MAX_NAME_LENGTH = 63
MAX_PREFIX_LENGTH = 16
MAX_USER_SLUG = 24
MAX_SERVER_SLUG = 16
_HASH_LENGTH = 8

# A slug kept as it is: lowercase letters and digits in runs joined by single dashes. It can never contain "--",
# which every escaped slug does, so a kept name and an escaped name never meet.
_PLAIN_SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
_UNSAFE_RUN = re.compile(r"[^a-z0-9]+")
_DOCKER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_PREFIX = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


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
    """The prefix starts every name: a plain slug of at most 16 characters."""
    if len(prefix) > MAX_PREFIX_LENGTH or not _PREFIX.fullmatch(prefix):
        raise ValueError(f"prefix {prefix!r} must be 1-{MAX_PREFIX_LENGTH} lowercase letters, digits and single dashes")
    return prefix


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
    """Templates for each kind of object, filled from :func:`template_fields`."""

    container: str = "{prefix}-{user}{server_suffix}"
    home_volume: str = "{prefix}-{user}_home"
    network: str = "{prefix}-{user}{server_suffix}_net"
    database_container: str = "{prefix}-{user}{server_suffix}_db"
    database_volume: str = "{prefix}-{user}{server_suffix}_db"


@dataclass(frozen=True)
class ResourceNames:
    """The names of one user server's objects."""

    container: str
    home_volume: str
    network: str
    database_container: str
    database_volume: str


def render_name(template: str, fields: dict[str, str], setting: str) -> str:
    """Fill one template and check the result, naming the setting when it is wrong."""
    try:
        name = template.format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"{setting}: cannot fill template {template!r}: {e!r}") from None
    if not is_valid_docker_name(name):
        raise ValueError(
            f"{setting}: template {template!r} gives {name!r}, which is not a valid Docker name "
            f"of at most {MAX_NAME_LENGTH} characters"
        )
    return name


def resource_names(templates: NameTemplates, fields: dict[str, str]) -> ResourceNames:
    """All of one server's names; ``fields`` holds at least :func:`template_fields`."""
    return ResourceNames(
        container=render_name(templates.container, fields, "name_template"),
        home_volume=render_name(templates.home_volume, fields, "home_volume_name_template")
        if templates.home_volume
        else "",
        network=render_name(templates.network, fields, "network_name_template"),
        database_container=render_name(templates.database_container, fields, "database_container_name_template"),
        database_volume=render_name(templates.database_volume, fields, "database_volume_name_template"),
    )


def labels(role: str, username: str, servername: str = "") -> dict[str, str]:
    """Labels for an object of ``role`` owned by one user (and server; volumes of a user carry ``""``)."""
    return {
        LABEL_MANAGED: "true",
        LABEL_USER: username,
        LABEL_SERVER: servername,
        LABEL_ROLE: role,
    }
