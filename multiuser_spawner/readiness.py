"""Telling that a per-user service is ready, from the hub, with as few Docker calls as possible.

Each kind of service is asked in its own protocol over the private network, the way its own ping tool does:
Postgres by a startup message (pg_isready's rule), Redis by ``PING``, RabbitMQ by the AMQP protocol header,
MySQL/MariaDB by the greeting a server sends to every new connection, anything else by its port accepting a
connection. An admin's command, run in the container, is the slow path (a ``docker exec`` is several API calls
and a process): it runs only once the port is open, and at most once per ``interval``.

The engine is reached through three callables, so the same waits serve every backend.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .tcp import TCP_OPEN, TCP_UNREACHABLE, connect_intervals, open_tcp

READY = "ready"
NOT_READY = "not ready"  # it listens, but says it cannot serve yet (or says nothing)

KIND_TCP = "tcp"
KIND_POSTGRES = "postgres"
KIND_REDIS = "redis"
KIND_AMQP = "amqp"
KIND_MYSQL = "mysql"
KIND_COMMAND = "command"

ANSWER_TIMEOUT = 3.0
MAX_ANSWER_BYTES = 8192

# -- Postgres ----------------------------------------------------------------------------------------------------

POSTGRES_PROTOCOL_3_0 = 3 << 16
# The SQLSTATE of "the database system is starting up" (also sent while it shuts down or recovers).
POSTGRES_CANNOT_CONNECT_NOW = "57P03"
#: pg_isready in the container: how a Postgres server is checked when the hub cannot reach its network
POSTGRES_FALLBACK_COMMAND = ("pg_isready", "--quiet", "--host=127.0.0.1", "--port={port}")


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


async def _ask_postgres(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, probe: Probe) -> tuple[bool, str]:
    # Closed before any authentication, as pg_isready does, which the server does not log.
    writer.write(postgres_startup_message(probe.login_user, probe.login_database))
    header = await asyncio.wait_for(reader.readexactly(5), ANSWER_TIMEOUT)
    length = struct.unpack("!i", header[1:])[0]
    body = await asyncio.wait_for(reader.readexactly(max(0, min(length - 4, MAX_ANSWER_BYTES))), ANSWER_TIMEOUT)
    return postgres_answer(header[:1], body)


# -- Redis -------------------------------------------------------------------------------------------------------


def redis_answer(line: bytes) -> tuple[bool, str]:
    """A reply to ``PING``: ``+PONG``, or an error asking for the password, means the server serves; ``-LOADING``
    (reading its data back from disk) and ``-BUSY`` mean not yet."""
    text = line.decode(errors="replace").strip()
    not_yet = text.startswith(("-LOADING", "-BUSY", "-MASTERDOWN"))
    return bool(text) and not not_yet, text or "no answer"


def redis_command(*words: str) -> bytes:
    """A command in Redis's protocol (RESP): safe for a password with spaces or newlines in it."""
    encoded = [word.encode() for word in words]
    return f"*{len(encoded)}\r\n".encode() + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in encoded)


async def _ask_redis(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, probe: Probe) -> tuple[bool, str]:
    if probe.secret:
        # Redis checks the password before it checks that its data is loaded: an unauthenticated PING gets
        # "-NOAUTH" even while loading. Logged in (AUTH is served while loading), PING tells "-LOADING" honestly.
        writer.write(redis_command("AUTH", probe.secret))
    writer.write(redis_command("PING"))
    if probe.secret:
        # +OK; or an error (a wrong password, a server without one): PING's answer still says if it serves
        await asyncio.wait_for(reader.readline(), ANSWER_TIMEOUT)
    return redis_answer(await asyncio.wait_for(reader.readline(), ANSWER_TIMEOUT))


# -- AMQP 0-9-1 (RabbitMQ) ---------------------------------------------------------------------------------------

AMQP_0_9_1_HEADER = b"AMQP\x00\x00\x09\x01"
AMQP_FRAME_METHOD = 1


def amqp_answer(first: bytes) -> tuple[bool, str]:
    """The server's answer to the protocol header: a method frame (Connection.Start) means it serves; a protocol
    header back means it serves another AMQP version, which is up too."""
    if first[:1] == bytes([AMQP_FRAME_METHOD]):
        return True, "Connection.Start"
    if first[:4] == b"AMQP":
        return True, f"it speaks AMQP {tuple(first[4:8])}"
    return False, f"unexpected answer {first!r}"


async def _ask_amqp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, probe: Probe) -> tuple[bool, str]:
    writer.write(AMQP_0_9_1_HEADER)
    return amqp_answer(await asyncio.wait_for(reader.readexactly(8), ANSWER_TIMEOUT))


# -- MySQL / MariaDB ---------------------------------------------------------------------------------------------


def mysql_answer(packet: bytes) -> tuple[bool, str]:
    """The greeting a server sends unasked: protocol 10 (0x0a) means it serves; an error packet (0xff: too many
    connections, host not allowed) comes from a running server too."""
    if not packet:
        return False, "no greeting"
    if packet[0] == 0x0A:
        return True, "greeting"
    if packet[0] == 0xFF:
        return True, packet[3:].decode(errors="replace")
    return False, f"unexpected greeting {packet[:16]!r}"


async def _ask_mysql(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, probe: Probe) -> tuple[bool, str]:
    header = await asyncio.wait_for(reader.readexactly(4), ANSWER_TIMEOUT)
    length = int.from_bytes(header[:3], "little")
    return mysql_answer(await asyncio.wait_for(reader.readexactly(min(length, MAX_ANSWER_BYTES)), ANSWER_TIMEOUT))


_ASK = {KIND_POSTGRES: _ask_postgres, KIND_REDIS: _ask_redis, KIND_AMQP: _ask_amqp, KIND_MYSQL: _ask_mysql}


# -- probes and the wait -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """How the hub tells that one service is ready.

    ``kind`` is one of the ``KIND_*``. For :data:`KIND_COMMAND`, ``command`` runs in the container once ``port``
    (if any) accepts connections, at most once per ``interval``. For the protocol kinds, ``command`` (if any) is
    the fallback run in the container when the hub cannot reach the service's network at all. ``secret`` is
    replaced by ``***`` in every message."""

    kind: str
    port: int | None
    command: tuple[str, ...] = ()
    interval: float = 2.0
    login_user: str = ""
    login_database: str = ""
    secret: str = field(default="", repr=False)

    def redact(self, text: str) -> str:
        return text.replace(self.secret, "***") if self.secret else text

    def described_command(self) -> str:
        return self.redact(" ".join(self.command))


async def ask(probe: Probe, ip: str) -> tuple[str, str]:
    """Ask the service at ``ip`` once: (:data:`READY`, :data:`NOT_READY`, ``TCP_REFUSED`` or
    ``TCP_UNREACHABLE``; what it said). A command probe answers ``TCP_OPEN`` when its port is open (or it has
    none): the command must then decide."""
    if probe.port is None:
        return TCP_OPEN, "no port to check"
    reach, streams = await open_tcp(ip, probe.port)
    if streams is None:
        return reach, f"{ip}:{probe.port} {reach}"
    reader, writer = streams
    try:
        if probe.kind == KIND_TCP:
            return READY, "port open"
        if probe.kind == KIND_COMMAND:
            return TCP_OPEN, "port open"
        ready, said = await _ASK[probe.kind](reader, writer, probe)
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
        return NOT_READY, "it accepted a connection but did not answer"
    finally:
        writer.close()
    return (READY if ready else NOT_READY), said


class ServiceNotReady(RuntimeError):
    """A service failed to become ready; the message says why and shows its last log lines."""

    def __init__(self, what: str, reason: str, logs: str):
        tail = logs.strip() or "(no output)"
        super().__init__(f"{what}: {reason}. Its last log lines:\n{tail}")


AddressOf = Callable[[], Awaitable[str]]  # the service's IP ("" if it has none yet); raises if it stopped
RunInside = Callable[[list[str]], Awaitable[tuple[int, str]]]
LogsTail = Callable[[], Awaitable[str]]


async def wait_until_ready(
    probe: Probe,
    what: str,
    timeout: float,
    address_of: AddressOf,
    run_inside: RunInside,
    logs_tail: LogsTail,
) -> int:
    """Wait until the service passes ``probe``; past ``timeout`` raise :class:`ServiceNotReady` with its last
    logs. Returns how many commands it ran in the container (0 when the hub could tell by itself)."""
    began = time.monotonic()
    deadline = began + timeout
    next_exec = began
    pauses = connect_intervals()
    execs = 0
    command_said = ""  # what the last command run said: a better reason than "port open" while it is throttled
    while True:
        address = await address_of()
        if address:
            reach, said = await ask(probe, address)
        else:
            reach, said = TCP_UNREACHABLE, "no address yet"
        if reach == READY:
            return execs
        may_exec = probe.command and time.monotonic() >= next_exec
        if may_exec and reach in (TCP_OPEN, TCP_UNREACHABLE):
            exit_code, output = await run_inside(list(probe.command))
            execs += 1
            if exit_code == 0:
                return execs
            command_said = f"{probe.described_command()} exited {exit_code}: {probe.redact(output.strip())!r}"
            next_exec = time.monotonic() + probe.interval
        said = command_said or said
        if time.monotonic() >= deadline:
            raise ServiceNotReady(what, f"not ready after {timeout:g} s (last check: {said})", await logs_tail())
        await asyncio.sleep(next(pauses))
