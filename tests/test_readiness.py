"""Telling that a service is ready: each protocol's answer rules against literal bytes, and the wait against
loopback servers that speak (or refuse to speak) the protocol, with a stand-in Docker client that counts execs."""

from __future__ import annotations

import asyncio

import pytest
from test_units import _StartingServers, refusing_port

from multiuser_spawner import readiness
from multiuser_spawner.docker_gateway import DockerGateway
from multiuser_spawner.local import LocalEngine
from multiuser_spawner.readiness import Probe


class _StartingService(_StartingServers):
    """A service container at ``ip``; its ready command fails ``failures`` times, then succeeds."""

    def __init__(self, ip: str, failures: int = 0):
        super().__init__({"svc": "running"})
        networks = {"u_net": {"IPAddress": ip}} if ip else {}
        self.containers_result[0]["NetworkSettings"] = {"Networks": networks}
        self.failures = failures
        self.exec_calls = 0

    def exec_create(self, name, cmd, **kwargs):
        self.exec_calls += 1
        return {"Id": str(self.exec_calls)}

    def exec_start(self, exec_id):
        return b"ok" if self.exec_calls > self.failures else b"no response from s3cret-pw"

    def exec_inspect(self, exec_id):
        return {"ExitCode": 0 if self.exec_calls > self.failures else 2}


async def wait(client: _StartingService, probe: Probe, timeout: float) -> int:
    engine = LocalEngine(DockerGateway(client, concurrency=2, view_max_age=30))
    return await readiness.wait_until_ready(
        probe,
        "service svc",
        timeout,
        address_of=lambda: engine.address("svc", "u_net", 0),
        run_inside=lambda command: engine.run_inside("svc", command),
        logs_tail=lambda: engine.logs_tail("svc"),
    )


# -- answers -----------------------------------------------------------------------------------------------------


def test_postgres_startup_message():
    assert readiness.postgres_startup_message("ada", "notes") == (
        b"\x00\x00\x00\x21\x00\x03\x00\x00user\x00ada\x00database\x00notes\x00\x00"
    )


def _error(code: str, message: str) -> bytes:
    return f"SFATAL\0VFATAL\0C{code}\0M{message}\0\0".encode()


def test_postgres_answers_by_pg_isreadys_rule():
    assert readiness.postgres_answer(b"R", b"\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00") == (
        True,
        "accepting connections",
    )
    starting = _error("57P03", "the database system is starting up")
    assert readiness.postgres_answer(b"E", starting) == (False, "the database system is starting up")
    # up, though this login would not get in: pg_isready says "accepting connections" too
    assert readiness.postgres_answer(b"E", _error("53300", "sorry, too many clients already"))[0]
    assert readiness.postgres_answer(b"E", _error("28000", 'no pg_hba.conf entry for host "10.0.0.1"'))[0]


@pytest.mark.parametrize(
    ("line", "ready"),
    [
        (b"+PONG\r\n", True),
        (b"-NOAUTH Authentication required.\r\n", True),
        (b"-LOADING Redis is loading the dataset in memory\r\n", False),
        (b"-BUSY Redis is busy running a script\r\n", False),
        (b"", False),
    ],
)
def test_redis_answers(line, ready):
    assert readiness.redis_answer(line)[0] is ready


def test_amqp_answers():
    assert readiness.amqp_answer(b"\x01\x00\x00\x00\x00\x01\xf4\x00") == (True, "Connection.Start")
    assert readiness.amqp_answer(b"AMQP\x00\x00\x09\x01")[0]  # another version, but a server
    assert not readiness.amqp_answer(b"HTTP/1.1")[0]


def test_mysql_answers():
    assert readiness.mysql_answer(b"\x0a10.11.6-MariaDB\x00") == (True, "greeting")
    assert readiness.mysql_answer(b"\xff\x10\x04Too many connections") == (True, "Too many connections")
    assert not readiness.mysql_answer(b"")[0]


# -- the waits ---------------------------------------------------------------------------------------------------


class _FakePostgres:
    """A loopback server answering startup messages: "starting up" ``starting`` times, then an auth request."""

    def __init__(self, starting: int):
        self.starting = starting
        self.startup_messages: list[bytes] = []

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length = int.from_bytes(await reader.readexactly(4), "big")
        self.startup_messages.append(await reader.readexactly(length - 4))
        if len(self.startup_messages) <= self.starting:
            body = _error("57P03", "the database system is starting up")
            writer.write(b"E" + (len(body) + 4).to_bytes(4, "big") + body)
        else:
            writer.write(b"R\x00\x00\x00\x17\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00")
        await writer.drain()
        writer.close()


async def serve(handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def postgres_probe(port: int) -> Probe:
    return Probe(
        kind=readiness.KIND_POSTGRES, port=port, command=("pg_isready",), login_user="ada", login_database="notes"
    )


async def test_postgres_is_asked_by_the_hub_without_any_exec():
    fake = _FakePostgres(starting=3)
    server, port = await serve(fake.answer)
    client = _StartingService("127.0.0.1")
    try:
        execs = await asyncio.wait_for(wait(client, postgres_probe(port), 10), 5)
    finally:
        server.close()
    assert len(fake.startup_messages) == 4  # three "starting up", then ready
    assert b"user\x00ada\x00database\x00notes\x00" in fake.startup_messages[-1]
    assert execs == client.exec_calls == 0
    assert client.inspect_calls == 0


async def test_postgres_that_stays_starting_up_fails_with_what_it_said():
    server, port = await serve(_FakePostgres(starting=10**6).answer)
    client = _StartingService("127.0.0.1")
    try:
        with pytest.raises(readiness.ServiceNotReady, match="not ready after 1 s") as failure:
            await asyncio.wait_for(wait(client, postgres_probe(port), 1), 5)
    finally:
        server.close()
    assert "last check: the database system is starting up" in str(failure.value)
    assert "ImportError" in str(failure.value)  # its last log lines
    assert client.exec_calls == 0


async def test_redis_loading_then_pong():
    replies = [b"-LOADING Redis is loading the dataset in memory\r\n"] * 2 + [b"+PONG\r\n"]
    asked: list[bytes] = []

    async def answer(reader, writer):
        asked.append(await reader.readline())
        writer.write(replies[min(len(asked), len(replies)) - 1])
        await writer.drain()
        writer.close()

    server, port = await serve(answer)
    try:
        execs = await asyncio.wait_for(wait(_StartingService("127.0.0.1"), Probe(readiness.KIND_REDIS, port), 10), 5)
    finally:
        server.close()
    assert asked == [b"*1\r\n"] * 3  # PING, in RESP
    assert execs == 0


async def test_redis_with_a_password_is_not_ready_while_it_loads():
    """Redis 7 answers an unauthenticated PING with -NOAUTH even while it loads its data: the probe logs in first."""
    loaded_after = 2
    commands: list[list[bytes]] = []

    async def read_command(reader) -> list[bytes]:
        count = int((await reader.readline())[1:])
        words = []
        for _ in range(count):
            size = int((await reader.readline())[1:])
            words.append((await reader.readexactly(size + 2))[:-2])
        return words

    async def answer(reader, writer):
        authenticated = False
        while True:
            try:
                command = await read_command(reader)
            except (asyncio.IncompleteReadError, ValueError):
                break
            commands.append(command)
            if command[0] == b"AUTH":
                authenticated = command[1] == b"pass word"
                writer.write(b"+OK\r\n" if authenticated else b"-WRONGPASS invalid password\r\n")
            elif not authenticated:
                writer.write(b"-NOAUTH Authentication required.\r\n")
            elif sum(1 for c in commands if c == [b"PING"]) <= loaded_after:
                writer.write(b"-LOADING Redis is loading the dataset in memory\r\n")
            else:
                writer.write(b"+PONG\r\n")
            await writer.drain()
        writer.close()

    server, port = await serve(answer)
    probe = Probe(readiness.KIND_REDIS, port, secret="pass word")
    try:
        await asyncio.wait_for(wait(_StartingService("127.0.0.1"), probe, 10), 5)
    finally:
        server.close()
    assert commands == [[b"AUTH", b"pass word"], [b"PING"]] * (loaded_after + 1)


async def test_amqp_header_answered_by_connection_start():
    headers: list[bytes] = []

    async def answer(reader, writer):
        headers.append(await reader.readexactly(8))
        writer.write(b"\x01\x00\x00\x00\x00\x01\xf4\x00\x0a\x00\x0a")
        await writer.drain()
        writer.close()

    server, port = await serve(answer)
    try:
        await asyncio.wait_for(wait(_StartingService("127.0.0.1"), Probe(readiness.KIND_AMQP, port), 10), 5)
    finally:
        server.close()
    assert headers == [b"AMQP\x00\x00\x09\x01"]


async def test_a_silent_listener_is_not_ready():
    async def answer(reader, writer):
        await asyncio.sleep(10)

    server, port = await serve(answer)
    probe = Probe(readiness.KIND_MYSQL, port)
    try:
        assert (await readiness.ask(probe, "127.0.0.1"))[0] == readiness.NOT_READY
    finally:
        server.close()


async def test_ready_command_runs_once_its_port_opens():
    port = await refusing_port()
    client = _StartingService("127.0.0.1")
    probe = Probe(readiness.KIND_COMMAND, port, command=("check",), interval=0.1)
    waiting = asyncio.ensure_future(wait(client, probe, 10))
    await asyncio.sleep(1.0)  # initialising: the port refuses, so no exec however long it takes
    assert client.exec_calls == 0
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
    try:
        await asyncio.wait_for(waiting, 5)
    finally:
        listener.close()
    assert client.exec_calls == 1
    assert client.inspect_calls == 0


async def test_a_failing_ready_command_runs_at_most_once_per_interval():
    listener, port = await serve(lambda r, w: w.close())
    client = _StartingService("127.0.0.1", failures=10**6)
    probe = Probe(
        readiness.KIND_COMMAND, port, command=("check", "--password=s3cret-pw"), interval=0.5, secret="s3cret-pw"
    )
    try:
        with pytest.raises(readiness.ServiceNotReady) as failure:
            await asyncio.wait_for(wait(client, probe, 2.2), 10)
    finally:
        listener.close()
    # 2.2 s at one exec per 0.5 s: 5 at most (the port is open the whole time; unthrottled it would be dozens)
    assert 3 <= client.exec_calls <= 5
    message = str(failure.value)
    assert "s3cret-pw" not in message
    assert "check --password=*** exited 2" in message


async def test_a_service_out_of_reach_is_checked_by_its_fallback_command_alone():
    client = _StartingService("", failures=2)  # no address this process could try
    probe = Probe(readiness.KIND_COMMAND, 5432, command=("pg_isready",), interval=0.1)
    await asyncio.wait_for(wait(client, probe, 10), 5)
    assert client.exec_calls == 3
