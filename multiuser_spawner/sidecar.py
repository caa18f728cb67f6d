"""The per-user database that runs beside a notebook.

Its credentials are generated once, when its data volume is created, and kept as a label on that volume: the
password then lives exactly as long as the data it protects, survives hub restarts and a lost hub database, and
is never passed through a log. Whoever can read volume labels can already run commands as root on the host.
"""

from __future__ import annotations

import asyncio
import secrets
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from .container_spec import ContainerSpec
from .docker_gateway import DockerGateway, DockerGatewayError, ensure_ours
from .names import LABEL_DB_PASSWORD, ROLE_DATABASE_DATA, labels
from .startup import TCP_OPEN, TCP_UNREACHABLE, connect_intervals, current_state, open_tcp, probe_tcp

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


# pg_isready, run in the database container: how a Postgres database is checked when the hub cannot reach its network.
POSTGRES_READY_COMMAND = ("pg_isready", "--quiet", "--host=127.0.0.1", "--port={db_port}")
POSTGRES_PROTOCOL_3_0 = 3 << 16
# The SQLSTATE of "the database system is starting up" (also sent while it shuts down or recovers).
POSTGRES_CANNOT_CONNECT_NOW = "57P03"
# Enough of the server's first answer to read an error message; an authentication request is much shorter.
MAX_ANSWER_BYTES = 8192

DB_READY = "ready"
DB_NOT_READY = "not ready"  # it listens, but says it cannot take connections yet (or says nothing)


@dataclass(frozen=True)
class ReadinessCheck:
    """How the hub tells that a database is ready.

    With ``postgres_login`` (user, database) the hub asks the server itself, over its network, the way
    ``pg_isready`` does; ``command`` is then only run in the container when the hub cannot reach that network.
    Without it, ``command`` is run in the container once the port accepts connections."""

    port: int
    command: tuple[str, ...]
    postgres_login: tuple[str, str] | None = None


def postgres_readiness(credentials: DatabaseCredentials) -> ReadinessCheck:
    """pg_isready's rule, checked by the hub, for the database these credentials open."""
    fields = credentials.template_fields()
    return ReadinessCheck(
        port=credentials.port,
        command=tuple(part.format(**fields) for part in POSTGRES_READY_COMMAND),
        postgres_login=(credentials.user, credentials.name),
    )


def postgres_startup_message(user: str, database: str) -> bytes:
    """The first message a Postgres client sends (protocol 3.0): who it is and which database it wants."""
    body = struct.pack("!i", POSTGRES_PROTOCOL_3_0) + f"user\0{user}\0database\0{database}\0\0".encode()
    return struct.pack("!i", len(body) + 4) + body


def postgres_answer(kind: bytes, body: bytes) -> tuple[bool, str]:
    """Whether a server's first answer to a startup message means it accepts connections, and what it said.

    pg_isready's rule: any answer but "cannot connect now" (SQLSTATE 57P03) means the server is up, including an
    authentication request (the usual answer) and errors such as a wrong password or too many clients."""
    if kind != b"E":
        return True, "accepting connections"
    fields = {part[:1].decode(): part[1:].decode(errors="replace") for part in body.split(b"\0") if part}
    said = fields.get("M", "an error without a message")
    return fields.get("C") != POSTGRES_CANNOT_CONNECT_NOW, said


async def probe_postgres(ip: str, port: int, user: str, database: str, timeout: float = 3.0) -> tuple[str, str]:
    """One startup exchange with the Postgres server at ``ip:port``: (:data:`DB_READY`, :data:`DB_NOT_READY`,
    :data:`TCP_REFUSED` or :data:`TCP_UNREACHABLE`; what it said). The connection is closed before any
    authentication, as pg_isready does, which the server does not log."""
    reach, streams = await open_tcp(ip, port)
    if streams is None:
        return reach, f"{ip}:{port} {reach}"
    reader, writer = streams
    try:
        writer.write(postgres_startup_message(user, database))
        header = await asyncio.wait_for(reader.readexactly(5), timeout)
        length = struct.unpack("!i", header[1:])[0]
        body = await asyncio.wait_for(reader.readexactly(max(0, min(length - 4, MAX_ANSWER_BYTES))), timeout)
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
        return DB_NOT_READY, "it accepted a connection but did not answer"
    finally:
        writer.close()
    ready, said = postgres_answer(header[:1], body)
    return (DB_READY if ready else DB_NOT_READY), said


async def wait_until_ready(
    gateway: DockerGateway,
    container: str,
    check: ReadinessCheck,
    timeout: float,
    exec_every: float = 2.0,
) -> None:
    """Wait until the database passes ``check``; past ``timeout`` raise with its last logs.

    A command run in the container is a ``docker exec`` (three API calls and a process started in the
    container), so during a class-wide burst they add up. The hub therefore checks from outside where it can: a
    Postgres server by its own answer; for a command, it watches the port (an image's first-run setup serves on a
    local socket only, and refuses TCP meanwhile) and runs the command once the port accepts connections. Only
    when this process cannot reach the database's network at all (no answer, not even a refusal) does the command
    run every ``exec_every`` s instead.
    """
    began = time.monotonic()
    deadline = began + timeout
    next_exec = began
    pauses = connect_intervals()
    while True:
        address = await _running_address(gateway, container, began)
        reach, said = await _check_from_here(check, address)
        if reach == DB_READY:
            return
        if reach == TCP_OPEN or (reach == TCP_UNREACHABLE and time.monotonic() >= next_exec):
            exit_code, output = await gateway.exec_run(container, list(check.command))
            if exit_code == 0:
                return
            said = f"{' '.join(check.command)} said {output.strip()!r}"
            next_exec = time.monotonic() + exec_every
        if time.monotonic() >= deadline:
            logs = await gateway.logs_tail(container, 20)
            raise DatabaseNotReady(container, f"not ready after {timeout:g} s (last check: {said})", logs)
        await asyncio.sleep(next(pauses))


async def _check_from_here(check: ReadinessCheck, address: str) -> tuple[str, str]:
    """What the hub can tell of the database at ``address`` without Docker's help, and how it knows."""
    if not address:
        return TCP_UNREACHABLE, "no address"
    if check.postgres_login is not None:
        return await probe_postgres(address, check.port, *check.postgres_login)
    reach = await probe_tcp(address, check.port)
    return reach, f"{address}:{check.port} {reach}"


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
