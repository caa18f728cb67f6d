"""The per-user database that runs beside a notebook.

Its credentials are generated once, when its data volume is created, and kept as a label on that volume: the
password then lives exactly as long as the data it protects, survives hub restarts and a lost hub database, and
is never passed through a log. Whoever can read volume labels can already run commands as root on the host.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from .container_spec import ContainerSpec
from .docker_gateway import DockerGateway, DockerGatewayError, ensure_ours
from .names import LABEL_DB_PASSWORD, ROLE_DATABASE_DATA, labels
from .startup import TCP_OPEN, TCP_UNREACHABLE, connect_intervals, current_state, probe_tcp

PASSWORD_BYTES = 24


@dataclass(frozen=True)
class DatabaseCredentials:
    host: str
    port: int
    user: str
    password: str
    name: str
    scheme: str = "postgresql"

    @property
    def url(self) -> str:
        return (
            f"{self.scheme}://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{quote(self.name, safe='')}"
        )

    def template_fields(self) -> dict[str, str]:
        """Fields for ``database_env`` templates: ``{db_user}``, ``{db_password}``, ``{db_name}``, ``{db_port}``."""
        return {
            "db_user": self.user,
            "db_password": self.password,
            "db_name": self.name,
            "db_port": str(self.port),
        }


def notebook_environment(credentials: DatabaseCredentials) -> dict[str, str]:
    """What the notebook gets: the seed's names, the long forms, a URL, and libpq's own so bare ``psql`` works."""
    c = credentials
    return {
        "DATABASE_HOST": c.host,
        "DATABASE_PORT": str(c.port),
        "DATABASE_USER": c.user,
        "DATABASE_PASS": c.password,
        "DATABASE_PASSWORD": c.password,
        "DATABASE_NAME": c.name,
        "DATABASE_URL": c.url,
        "PGHOST": c.host,
        "PGPORT": str(c.port),
        "PGUSER": c.user,
        "PGPASSWORD": c.password,
        "PGDATABASE": c.name,
    }


def render_database_env(templates: Mapping[str, str], credentials: DatabaseCredentials) -> dict[str, str]:
    """The database container's own environment, e.g. ``POSTGRES_PASSWORD: "{db_password}"``."""
    fields = credentials.template_fields()
    return {key: value.format(**fields) for key, value in templates.items()}


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


async def ensure_data_volume(gateway: DockerGateway, volume: str, username: str, servername: str) -> tuple[str, bool]:
    """The data volume's password, creating volume and password together if the volume is new."""
    volume_labels = labels(ROLE_DATABASE_DATA, username, servername)
    volume_labels[LABEL_DB_PASSWORD] = new_password()
    info, created = await gateway.ensure_volume(volume, volume_labels)
    password = (info.get("Labels") or {}).get(LABEL_DB_PASSWORD)
    if not password:
        raise DockerGatewayError(
            f"database volume {volume} exists but was not made by multiuser-spawner (it has no "
            f"{LABEL_DB_PASSWORD} label); its password is unknown. Rename or remove it to start a new database."
        )
    return password, created


async def start_database(gateway: DockerGateway, spec: ContainerSpec, recreate: bool) -> str:
    """Start the database container, creating it if needed (or anew, when ``recreate``); return its id."""
    name = spec.create["name"]
    existing = await gateway.inspect_container(name)
    if existing is not None:
        ensure_ours(existing)
    if existing is not None and recreate:
        await gateway.remove_container(name)
        existing = None
    container_id = existing["Id"] if existing else await gateway.create_container(spec)
    await gateway.start_container(container_id)
    return container_id


async def wait_until_ready(
    gateway: DockerGateway,
    container: str,
    command: list[str],
    timeout: float,
    port: int,
    exec_every: float = 2.0,
) -> None:
    """Wait until ``command`` succeeds in the database container; past ``timeout`` raise with its last logs.

    Each check is a ``docker exec`` (three API calls and a process in the container), so during a class-wide
    burst they add up. The port is watched from here instead, at no cost to Docker, and the command runs once it
    accepts connections (an image's first-run setup serves on a local socket only, and refuses TCP meanwhile).
    Only when this process cannot reach the database's network at all (no answer, not even a refusal) does the
    command run every ``exec_every`` s instead.
    """
    began = time.monotonic()
    deadline = began + timeout
    next_exec = began
    pauses = connect_intervals()
    last_output = ""
    while True:
        address = await _running_address(gateway, container, began)
        reach = await probe_tcp(address, port) if address else TCP_UNREACHABLE
        if reach == TCP_OPEN or (reach == TCP_UNREACHABLE and time.monotonic() >= next_exec):
            exit_code, last_output = await gateway.exec_run(container, command)
            if exit_code == 0:
                return
            next_exec = time.monotonic() + exec_every
        if time.monotonic() >= deadline:
            logs = await gateway.logs_tail(container, 20)
            raise DatabaseNotReady(
                container, f"not ready after {timeout:g} s (last check: {last_output.strip()!r})", logs
            )
        await asyncio.sleep(next(pauses))


async def _running_address(gateway: DockerGateway, container: str, since: float) -> str:
    """The database's IP address; raise with its logs if it is not running."""
    running, info = await current_state(gateway, container, since)
    if not running:
        raise DatabaseNotReady(container, "the database container stopped", await gateway.logs_tail(container, 20))
    networks = info["NetworkSettings"].get("Networks") or {}
    return next((n["IPAddress"] for n in networks.values() if n.get("IPAddress")), "")


class DatabaseNotReady(DockerGatewayError):
    def __init__(self, container: str, reason: str, logs: str):
        tail = logs.strip() or "(no output)"
        super().__init__(f"database container {container}: {reason}. Its last log lines:\n{tail}")
        self.container = container
