"""Per-user services: what an admin writes in ``services``, the presets that fill it in, and the checks that
name the wrong setting.

Pure functions only. A service is any image that runs beside a user's notebook, on the server's private network,
with a volume and a generated password of its own. The orchestration treats every service alike; what makes a
Postgres a Postgres (its image, its environment, how to tell it is ready) is data, in :data:`PRESETS`.
"""

from __future__ import annotations

import copy
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jupyterhub.traitlets import ByteSpecification

from . import names

PASSWORD_BYTES = 24

READY_TCP = "tcp"
READY_POSTGRES = "postgres"
READY_REDIS = "redis"
READY_AMQP = "amqp"
READY_MYSQL = "mysql"
READY_COMMAND = "command"
READY_KINDS = (READY_TCP, READY_POSTGRES, READY_REDIS, READY_AMQP, READY_MYSQL)

#: Capabilities the official database images' entrypoints need: they start as root, give the data directory to
#: the service's own user and switch to it. KILL lets the init process (root) pass the stop signal on to that
#: user's process, or every stop would end in a kill and a crash recovery.
ENTRYPOINT_CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID", "KILL"]

PRESETS: dict[str, dict[str, Any]] = {
    "postgres": {
        "image": "postgres:15",
        "port": 5432,
        "volume": "/var/lib/postgresql/data",
        "environment": {"POSTGRES_USER": "{user}", "POSTGRES_PASSWORD": "{password}", "POSTGRES_DB": "{name}"},
        "ready": READY_POSTGRES,
        "cap_add": ENTRYPOINT_CAPS,
        "stop_signal": "SIGINT",  # postgres' fast shutdown; SIGTERM waits for clients to leave
        "cpu_limit": 0.5,
        "mem_limit": "256M",
        "notebook_environment": {
            "DATABASE_HOST": "{host}",
            "DATABASE_PORT": "{port}",
            "DATABASE_USER": "{user}",
            "DATABASE_PASSWORD": "{password}",
            "DATABASE_NAME": "{name}",
            "DATABASE_URL": "postgresql://{user}:{password}@{host}:{port}/{name}",
            # libpq's own, so a bare psql or psycopg.connect("") works
            "PGHOST": "{host}",
            "PGPORT": "{port}",
            "PGUSER": "{user}",
            "PGPASSWORD": "{password}",
            "PGDATABASE": "{name}",
        },
    },
    "redis": {
        "image": "redis:7",
        "port": 6379,
        "volume": "/data",
        "command": ["redis-server", "--requirepass", "{password}", "--appendonly", "yes"],
        "ready": READY_REDIS,
        "cap_add": ENTRYPOINT_CAPS,
        "stop_signal": "SIGTERM",
        "cpu_limit": 0.25,
        "mem_limit": "128M",
        "notebook_environment": {
            "REDIS_HOST": "{host}",
            "REDIS_PORT": "{port}",
            "REDIS_PASSWORD": "{password}",
            "REDIS_URL": "redis://:{password}@{host}:{port}/0",
        },
    },
    "rabbitmq": {
        "image": "rabbitmq:3",
        "port": 5672,
        "volume": "/var/lib/rabbitmq",
        "environment": {"RABBITMQ_DEFAULT_USER": "{user}", "RABBITMQ_DEFAULT_PASS": "{password}"},
        "ready": READY_AMQP,
        "ready_timeout": 150,
        "cap_add": ENTRYPOINT_CAPS,
        "stop_signal": "SIGTERM",
        "cpu_limit": 0.5,
        "mem_limit": "512M",
        "notebook_environment": {
            "RABBITMQ_HOST": "{host}",
            "RABBITMQ_PORT": "{port}",
            "RABBITMQ_USER": "{user}",
            "RABBITMQ_PASSWORD": "{password}",
            "AMQP_URL": "amqp://{user}:{password}@{host}:{port}/%2F",
        },
    },
    "mysql": {
        "image": "mariadb:10",
        "port": 3306,
        "volume": "/var/lib/mysql",
        "environment": {
            "MARIADB_USER": "{user}",
            "MARIADB_PASSWORD": "{password}",
            "MARIADB_DATABASE": "{name}",
            "MARIADB_RANDOM_ROOT_PASSWORD": "1",
        },
        "ready": READY_MYSQL,
        "cap_add": ENTRYPOINT_CAPS,
        "stop_signal": "SIGTERM",
        "cpu_limit": 0.5,
        "mem_limit": "256M",
        "notebook_environment": {
            "MYSQL_HOST": "{host}",
            "MYSQL_PORT": "{port}",
            "MYSQL_USER": "{user}",
            "MYSQL_PASSWORD": "{password}",
            "MYSQL_DATABASE": "{name}",
            "MYSQL_URL": "mysql://{user}:{password}@{host}:{port}/{name}",
        },
    },
}

#: What a service gets when neither the admin nor a preset says otherwise. No service runs without limits.
DEFAULTS: dict[str, Any] = {
    "port": None,
    "volume": "",
    "environment": {},
    "command": None,
    "ready": READY_TCP,
    "ready_interval": 2.0,
    "ready_timeout": 120,
    "cpu_limit": 0.5,
    "mem_limit": "256M",
    "cpu_guarantee": None,
    "mem_guarantee": None,
    "cap_add": [],
    "stop_signal": "SIGTERM",
    "notebook_environment": {},
    "user": "jupyter",
    "name": "jupyter",
}
FIELDS = ("preset", "image", "alias", *DEFAULTS)

#: The fields a service's ``environment``, ``command``, ``ready`` command and ``notebook_environment`` may use.
#: ``{db_*}`` are the spellings of ``database_env`` from before per-user services.
TEMPLATE_FIELDS = (
    "host",
    "port",
    "user",
    "password",
    "name",
    "service",
    "raw_username",
    "prefix",
    "db_user",
    "db_password",
    "db_name",
    "db_port",
)


class ServiceConfigError(ValueError):
    """A service setting is wrong; the message names it, as ``services['cache'].port``."""


@dataclass(frozen=True)
class ServiceSpec:
    """One service, every field resolved (preset, then the admin's values)."""

    key: str
    image: str
    alias: str
    port: int | None
    volume: str
    environment: dict[str, str]
    command: tuple[str, ...] | None
    ready: str
    ready_command: tuple[str, ...]
    ready_interval: float
    ready_timeout: float
    cpu_limit: float | None
    mem_limit: int | None
    cpu_guarantee: float | None
    mem_guarantee: int | None
    cap_add: tuple[str, ...]
    stop_signal: str
    notebook_environment: dict[str, str]
    user: str
    name: str


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def _where(key: str, field_name: str = "") -> str:
    return f"services[{key!r}]" + (f".{field_name}" if field_name else "")


def resolve(key: str, raw: Any) -> dict[str, Any]:
    """The service's settings with its preset's and the defaults' filled in (the admin's values win)."""
    if not isinstance(raw, Mapping):
        raise ServiceConfigError(f"{_where(key)} must be a dict of settings, not {raw!r}")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise ServiceConfigError(f"{_where(key)} has unknown setting(s) {unknown}; known: {', '.join(FIELDS)}")
    preset_name = raw.get("preset")
    if preset_name is not None and preset_name not in PRESETS:
        raise ServiceConfigError(f"{_where(key, 'preset')}: unknown preset {preset_name!r}; known: {sorted(PRESETS)}")
    merged = copy.deepcopy(DEFAULTS)
    merged["alias"] = key
    merged.update(copy.deepcopy(PRESETS.get(preset_name or "", {})))
    merged.update(copy.deepcopy({k: v for k, v in raw.items() if k != "preset"}))
    return merged


def parse_service(key: str, raw: Any) -> ServiceSpec:
    """Check and resolve one service; a wrong value raises :class:`ServiceConfigError` naming it."""
    try:
        names.validate_service_name(key)
    except ValueError as e:
        raise ServiceConfigError(f"services: {e}") from None
    s = resolve(key, raw)
    if not isinstance(s.get("image"), str) or not s["image"]:
        raise ServiceConfigError(f"{_where(key, 'image')} is required (or a preset: {sorted(PRESETS)})")
    alias = s["alias"]
    if not isinstance(alias, str) or not names.SERVICE_NAME.fullmatch(alias):
        raise ServiceConfigError(f"{_where(key, 'alias')}: {alias!r} is not a host name (lowercase letters, digits, -)")
    port = s["port"]
    if port is not None and (not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535):
        raise ServiceConfigError(f"{_where(key, 'port')}: {port!r} is not a port number (1-65535)")
    ready, ready_command = _parse_ready(key, s["ready"], port)
    spec = ServiceSpec(
        key=key,
        image=s["image"],
        alias=alias,
        port=port,
        volume=_path_or_empty(key, "volume", s["volume"]),
        environment=_string_dict(key, "environment", s["environment"]),
        command=tuple(_string_list(key, "command", s["command"])) if s["command"] is not None else None,
        ready=ready,
        ready_command=ready_command,
        ready_interval=_positive(key, "ready_interval", s["ready_interval"]),
        ready_timeout=_positive(key, "ready_timeout", s["ready_timeout"]),
        cpu_limit=_cpu(key, "cpu_limit", s["cpu_limit"]),
        mem_limit=_bytes(key, "mem_limit", s["mem_limit"]),
        cpu_guarantee=_cpu(key, "cpu_guarantee", s["cpu_guarantee"]),
        mem_guarantee=_bytes(key, "mem_guarantee", s["mem_guarantee"]),
        cap_add=tuple(_string_list(key, "cap_add", s["cap_add"])),
        stop_signal=_string(key, "stop_signal", s["stop_signal"]),
        notebook_environment=_string_dict(key, "notebook_environment", s["notebook_environment"]),
        user=_string(key, "user", s["user"]),
        name=_string(key, "name", s["name"]),
    )
    _check_templates(spec)
    return spec


def parse_services(raw: Any) -> list[ServiceSpec]:
    """Every service, sorted by key (so the order, and so the start order, never depends on how a dict was
    merged); two services giving the notebook the same variable are refused."""
    if not isinstance(raw, Mapping):
        raise ServiceConfigError(f"services must be a dict of name -> settings, not {raw!r}")
    specs = [parse_service(key, raw[key]) for key in sorted(raw)]
    given_by: dict[str, str] = {}
    aliases: dict[str, str] = {}
    for spec in specs:
        if spec.alias in aliases:
            raise ServiceConfigError(
                f"{_where(spec.key, 'alias')}: {spec.alias!r} is also the alias of {_where(aliases[spec.alias])}"
            )
        aliases[spec.alias] = spec.key
        for variable in spec.notebook_environment:
            if variable in given_by:
                raise ServiceConfigError(
                    f"{_where(spec.key, 'notebook_environment')}[{variable!r}] is also set by "
                    f"{_where(given_by[variable])}: give one of them other names"
                )
            given_by[variable] = spec.key
    return specs


def _parse_ready(key: str, ready: Any, port: int | None) -> tuple[str, tuple[str, ...]]:
    if isinstance(ready, list | tuple):
        return READY_COMMAND, tuple(_string_list(key, "ready", ready))
    if ready not in READY_KINDS:
        raise ServiceConfigError(
            f"{_where(key, 'ready')}: {ready!r} is not one of {list(READY_KINDS)} or a command (a list of strings)"
        )
    if port is None:
        raise ServiceConfigError(f"{_where(key, 'ready')}: {ready!r} needs the service's port ({_where(key, 'port')})")
    return ready, ()


def _check_templates(spec: ServiceSpec) -> None:
    """Fill every template with sample values now, so a misspelt field fails at hub start, not at a spawn."""
    sample = {name: "x" for name in TEMPLATE_FIELDS}
    templates = [(f"environment[{k!r}]", v) for k, v in spec.environment.items()]
    templates += [(f"notebook_environment[{k!r}]", v) for k, v in spec.notebook_environment.items()]
    templates += [("command", part) for part in spec.command or ()]
    templates += [("ready", part) for part in spec.ready_command]
    for where, template in templates:
        for _, field_name, _, _ in string.Formatter().parse(template):
            if field_name is not None and field_name not in sample:
                raise ServiceConfigError(
                    f"{_where(spec.key, where)}: unknown field {{{field_name}}} in {template!r}; "
                    f"known: {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}"
                )


def _string(key: str, name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ServiceConfigError(f"{_where(key, name)} must be a string, not {value!r}")
    return value


def _path_or_empty(key: str, name: str, value: Any) -> str:
    value = _string(key, name, value or "")
    if value and not value.startswith("/"):
        raise ServiceConfigError(f"{_where(key, name)} must be an absolute path in the container, not {value!r}")
    return value


def _string_list(key: str, name: str, value: Any) -> list[str]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ServiceConfigError(f"{_where(key, name)} must be a list of strings, not {value!r}")
    return list(value)


def _string_dict(key: str, name: str, value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ServiceConfigError(f"{_where(key, name)} must be a dict of strings, not {value!r}")
    for k, v in value.items():
        if not isinstance(v, str):
            raise ServiceConfigError(f"{_where(key, name)}[{k!r}] must be a string, not {v!r}")
    return dict(value)


def _positive(key: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ServiceConfigError(f"{_where(key, name)} must be a positive number of seconds, not {value!r}")
    return float(value)


def _cpu(key: str, name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ServiceConfigError(f"{_where(key, name)} must be a positive number of CPUs (or None), not {value!r}")
    return float(value)


def _bytes(key: str, name: str, value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(ByteSpecification().validate(None, value))
    except Exception:
        raise ServiceConfigError(
            f"{_where(key, name)} must be bytes or a size such as '256M' or '1G' (or None), not {value!r}"
        ) from None


# -- what a running service is given -----------------------------------------------------------------------------


def template_fields(spec: ServiceSpec, password: str, hub_fields: Mapping[str, str]) -> dict[str, str]:
    """The values of :data:`TEMPLATE_FIELDS` for one user's instance of ``spec``."""
    port = "" if spec.port is None else str(spec.port)
    return {
        "host": spec.alias,
        "port": port,
        "user": spec.user,
        "password": password,
        "name": spec.name,
        "service": spec.key,
        "raw_username": hub_fields.get("raw_username", ""),
        "prefix": hub_fields.get("prefix", ""),
        "db_user": spec.user,
        "db_password": password,
        "db_name": spec.name,
        "db_port": port,
    }


def render(templates: Mapping[str, str], fields: Mapping[str, str]) -> dict[str, str]:
    return {key: value.format(**fields) for key, value in templates.items()}


def render_list(templates: tuple[str, ...] | None, fields: Mapping[str, str]) -> tuple[str, ...] | None:
    return None if templates is None else tuple(part.format(**fields) for part in templates)


def redact(text: str, password: str) -> str:
    """``text`` with the password replaced, for messages shown on the spawn page and in the hub log."""
    return text.replace(password, "***") if password else text


# -- the database settings of releases before per-user services ---------------------------------------------------

#: What the notebook was told of its database then; kept, so notebooks written for it keep working.
LEGACY_NOTEBOOK_ENVIRONMENT = {
    **PRESETS["postgres"]["notebook_environment"],
    "DATABASE_PASS": "{password}",
    "DATABASE_URL": "{scheme}://{user}:{password}@{host}:{port}/{name}",
}


def legacy_database_service(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``db`` service that ``database_enabled`` and the other ``database_*`` settings describe (``settings``
    maps each trait name to its value)."""
    notebook_environment = {
        key: value.replace("{scheme}", settings["database_url_scheme"])
        for key, value in LEGACY_NOTEBOOK_ENVIRONMENT.items()
    }
    environment = dict(settings["database_env"])
    service: dict[str, Any] = {
        "preset": "postgres",
        "image": settings["database_image"],
        "alias": settings["database_hostname"],
        "port": settings["database_port"],
        "user": settings["database_user"],
        "name": settings["database_name"],
        "volume": settings["database_data_path"],
        "environment": environment,
        "ready_timeout": settings["database_ready_timeout"],
        "cap_add": list(settings["database_cap_add"]),
        "stop_signal": settings["database_stop_signal"],
        "notebook_environment": notebook_environment,
    }
    if settings["database_ready_command"]:
        service["ready"] = list(settings["database_ready_command"])
    for limit in ("cpu_limit", "mem_limit"):
        if settings[f"database_{limit}"] is not None:
            service[limit] = settings[f"database_{limit}"]
    return service
