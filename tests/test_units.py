"""Pure pieces: the sidecar's environment, progress, the gateway's concurrency, the shared container view, and
the waits for a server and a database (against loopback ports and a stand-in Docker client)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from multiuser_spawner import home, sidecar, startup
from multiuser_spawner.docker_gateway import ContainerView, DockerGateway, split_image_tag
from multiuser_spawner.progress import SpawnProgress, pull_percent
from multiuser_spawner.spawner import fill_template

CREDS = sidecar.DatabaseCredentials(host="db", port=5432, user="jupyter", password="p@ss/w:rd", name="jupyter")


def test_notebook_gets_every_database_variable():
    assert sidecar.notebook_environment(CREDS) == {
        "DATABASE_HOST": "db",
        "DATABASE_PORT": "5432",
        "DATABASE_USER": "jupyter",
        "DATABASE_PASS": "p@ss/w:rd",
        "DATABASE_PASSWORD": "p@ss/w:rd",
        "DATABASE_NAME": "jupyter",
        "DATABASE_URL": "postgresql://jupyter:p%40ss%2Fw%3Ard@db:5432/jupyter",
        "PGHOST": "db",
        "PGPORT": "5432",
        "PGUSER": "jupyter",
        "PGPASSWORD": "p@ss/w:rd",
        "PGDATABASE": "jupyter",
    }


def test_database_env_templates():
    env = sidecar.render_database_env({"MYSQL_PASSWORD": "{db_password}", "PORT": "{db_port}"}, CREDS)
    assert env == {"MYSQL_PASSWORD": "p@ss/w:rd", "PORT": "5432"}


def test_passwords_are_long_and_different():
    passwords = {sidecar.new_password() for _ in range(100)}
    assert len(passwords) == 100
    assert all(len(p) >= 32 for p in passwords)


def test_fill_template_leaves_non_templates_alone():
    fields = {"raw_username": "alice"}
    assert fill_template("{raw_username}", fields) == "alice"
    assert fill_template('{"a": 1}', fields) == '{"a": 1}'
    assert fill_template("{}", fields) == "{}"
    assert fill_template("{0.x}", fields) == "{0.x}"


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("postgres:15", ("postgres", "15")),
        ("postgres", ("postgres", "latest")),
        ("reg.example:5000/a/b", ("reg.example:5000/a/b", "latest")),
        ("reg.example:5000/a/b:2", ("reg.example:5000/a/b", "2")),
    ],
)
def test_split_image_tag(image, expected):
    assert split_image_tag(image) == expected


async def test_progress_replays_to_each_reader_and_never_goes_back():
    progress = SpawnProgress()
    progress.stage("volume", "volume")
    progress.stage("image", "late image message")  # stages may finish out of order
    seen_a, seen_b = [], []

    async def read(into):
        async for event in progress.follow():
            into.append(event.as_dict())
            if event.message == "done":
                return

    readers = [asyncio.ensure_future(read(seen_a)), asyncio.ensure_future(read(seen_b))]
    await asyncio.sleep(0)
    progress.stage("server-starting", "done")
    await asyncio.wait_for(asyncio.gather(*readers), 2)
    assert (
        seen_a
        == seen_b
        == [
            {"progress": 40, "message": "volume"},
            {"progress": 40, "message": "late image message"},
            {"progress": 90, "message": "done"},
        ]
    )


def test_pull_percent_moves_between_image_and_pulled():
    assert pull_percent(0, 0) == 5
    assert pull_percent(50, 100) == 17
    assert pull_percent(200, 100) == 30


class _CountingClient:
    """Stands in for docker-py: records how many calls overlap."""

    def __init__(self):
        self.active = 0
        self.most = 0
        self.lock = threading.Lock()
        self.list_calls = 0
        self.containers_result: list[dict] = []

    def slow(self):
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        time.sleep(0.05)
        with self.lock:
            self.active -= 1

    def containers(self, **kwargs):
        self.list_calls += 1
        time.sleep(0.01)
        return self.containers_result


async def test_gateway_runs_different_calls_concurrently_up_to_its_bound():
    client = _CountingClient()
    gateway = DockerGateway(client, concurrency=4, view_max_age=30)
    await asyncio.gather(*(gateway.call("slow") for _ in range(12)))
    assert client.most == 4


async def test_container_view_shares_one_refresh_among_many_polls():
    client = _CountingClient()
    client.containers_result = [{"Names": [f"/c{i}"], "State": "running"} for i in range(100)]
    gateway = DockerGateway(client, concurrency=4, view_max_age=30)
    states = await asyncio.gather(*(gateway.view.state(f"c{i}") for i in range(100)))
    assert all(s["State"] == "running" for s in states)
    assert client.list_calls == 1
    # a poll for a container started after the snapshot forces one new refresh
    client.containers_result.append({"Names": ["/new"], "State": "running"})
    assert await gateway.view.state("new", not_older_than=time.monotonic()) is not None
    assert client.list_calls == 2


async def test_container_view_refreshes_when_stale():
    client = _CountingClient()
    view = ContainerView(DockerGateway(client, concurrency=1, view_max_age=0.05), max_age=0.05)
    client.containers_result = [{"Names": ["/a"], "State": "running"}]
    assert (await view.state("a"))["State"] == "running"
    client.containers_result = [{"Names": ["/a"], "State": "exited"}]
    assert (await view.state("a"))["State"] == "running"  # still fresh
    await asyncio.sleep(0.06)
    assert (await view.state("a"))["State"] == "exited"


def test_connect_intervals_start_short_and_level_off():
    pauses = startup.connect_intervals(first=0.05, most=0.25)
    taken = [next(pauses) for _ in range(8)]
    assert taken[0] == 0.05
    assert taken == sorted(taken)
    assert taken[-1] == 0.25


async def refusing_port() -> int:
    """A loopback port nothing listens on (it was bound a moment ago, so it refuses connections)."""
    probe = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    return port


class _StartingServers(_CountingClient):
    """Stands in for docker-py while servers start: lists the containers, counts every inspect."""

    def __init__(self, states: dict[str, str]):
        super().__init__()
        self.containers_result = [{"Names": [f"/{name}"], "State": state} for name, state in states.items()]
        self.inspect_calls = 0
        self.states = states

    def inspect_container(self, name):
        self.inspect_calls += 1
        running = self.states[name] == "running"
        return {"State": {"Running": running, "ExitCode": 0 if running else 3, "OOMKilled": False}}

    def logs(self, name, **kwargs):
        return b"ImportError: no module named jupyterhub\n"


async def test_many_starting_servers_share_one_container_list_and_inspect_nothing():
    servers = {f"nb{i}": "running" for i in range(20)}
    client = _StartingServers(servers)
    gateway = DockerGateway(client, concurrency=4, view_max_age=30)
    listeners = []

    async def start_and_wait(name: str) -> bool:
        port = await refusing_port()  # like a server still starting
        waiting = asyncio.ensure_future(startup.wait_until_listening(gateway, name, "127.0.0.1", port, timeout=10))
        await asyncio.sleep(1.2)
        listeners.append(await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port))
        return await waiting

    try:
        assert all(await asyncio.gather(*(start_and_wait(name) for name in servers)))
    finally:
        for listener in listeners:
            listener.close()
    assert client.inspect_calls == 0
    # 1.2 s of waiting at one list per STATE_CHECK_INTERVAL (0.5 s), for all twenty together
    assert 1 <= client.list_calls <= 4


async def test_a_server_that_stops_while_starting_fails_with_its_logs():
    client = _StartingServers({"nb": "exited"})
    gateway = DockerGateway(client, concurrency=2, view_max_age=30)
    port = await refusing_port()
    with pytest.raises(startup.ServerExited, match="exit code 3") as failure:
        await startup.wait_until_listening(gateway, "nb", "127.0.0.1", port, timeout=10)
    assert "no module named jupyterhub" in str(failure.value)
    assert client.inspect_calls == 1  # the list said stopped; one precise look to be sure


async def test_probe_tcp_tells_open_from_refused():
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    assert await startup.probe_tcp("127.0.0.1", port) == startup.TCP_OPEN
    listener.close()
    await listener.wait_closed()
    assert await startup.probe_tcp("127.0.0.1", port) == startup.TCP_REFUSED
    assert not await startup.accepts_tcp("127.0.0.1", port)


class _StartingDatabase(_StartingServers):
    """A database container at ``ip``; its ready command fails ``failures`` times, then succeeds."""

    def __init__(self, ip: str, failures: int = 0):
        super().__init__({"db": "running"})
        networks = {"u_net": {"IPAddress": ip}} if ip else {}
        self.containers_result[0]["NetworkSettings"] = {"Networks": networks}
        self.failures = failures
        self.exec_calls = 0

    def exec_create(self, name, cmd, **kwargs):
        self.exec_calls += 1
        return {"Id": str(self.exec_calls)}

    def exec_start(self, exec_id):
        return b"accepting connections" if self.exec_calls > self.failures else b"no response"

    def exec_inspect(self, exec_id):
        return {"ExitCode": 0 if self.exec_calls > self.failures else 2}


COMMAND_CHECK = sidecar.ReadinessCheck(port=5432, command=("pg_isready",))


async def test_database_ready_command_runs_once_its_port_opens():
    port = await refusing_port()
    client = _StartingDatabase("127.0.0.1")
    gateway = DockerGateway(client, concurrency=2, view_max_age=30)
    check = sidecar.ReadinessCheck(port=port, command=("pg_isready",))
    waiting = asyncio.ensure_future(sidecar.wait_until_ready(gateway, "db", check, 10, exec_every=0.1))
    await asyncio.sleep(1.0)  # initialising: the port refuses, so no exec however long it takes
    assert client.exec_calls == 0
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
    try:
        await asyncio.wait_for(waiting, 5)
    finally:
        listener.close()
    assert client.exec_calls == 1
    assert client.inspect_calls == 0


async def test_database_out_of_reach_is_checked_by_its_ready_command_alone():
    client = _StartingDatabase("", failures=2)  # no address this process could try
    gateway = DockerGateway(client, concurrency=2, view_max_age=30)
    await asyncio.wait_for(sidecar.wait_until_ready(gateway, "db", COMMAND_CHECK, 10, exec_every=0.1), 5)
    assert client.exec_calls == 3


def test_postgres_readiness_asks_as_the_notebook_user_and_falls_back_to_pg_isready():
    assert sidecar.postgres_readiness(CREDS) == sidecar.ReadinessCheck(
        port=5432,
        command=("pg_isready", "--quiet", "--host=127.0.0.1", "--port=5432"),
        postgres_login=("jupyter", "jupyter"),
    )


def test_postgres_startup_message():
    assert sidecar.postgres_startup_message("ada", "notes") == (
        b"\x00\x00\x00\x21\x00\x03\x00\x00user\x00ada\x00database\x00notes\x00\x00"
    )


def _error(code: str, message: str) -> bytes:
    return f"SFATAL\0VFATAL\0C{code}\0M{message}\0\0".encode()


def test_postgres_answers_by_pg_isreadys_rule():
    assert sidecar.postgres_answer(b"R", b"\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00") == (True, "accepting connections")
    starting = _error("57P03", "the database system is starting up")
    assert sidecar.postgres_answer(b"E", starting) == (False, "the database system is starting up")
    # up, though this login would not get in: pg_isready says "accepting connections" too
    assert sidecar.postgres_answer(b"E", _error("53300", "sorry, too many clients already"))[0]
    assert sidecar.postgres_answer(b"E", _error("28000", 'no pg_hba.conf entry for host "10.0.0.1"'))[0]


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

    async def serve(self) -> tuple[asyncio.Server, int]:
        server = await asyncio.start_server(self.answer, "127.0.0.1", 0)
        return server, server.sockets[0].getsockname()[1]


async def test_postgres_is_asked_by_the_hub_without_any_exec():
    fake = _FakePostgres(starting=3)
    server, port = await fake.serve()
    client = _StartingDatabase("127.0.0.1")
    gateway = DockerGateway(client, concurrency=2, view_max_age=30)
    check = sidecar.ReadinessCheck(port=port, command=("pg_isready",), postgres_login=("ada", "notes"))
    try:
        await asyncio.wait_for(sidecar.wait_until_ready(gateway, "db", check, 10), 5)
    finally:
        server.close()
    assert len(fake.startup_messages) == 4  # three "starting up", then ready
    assert b"user\x00ada\x00database\x00notes\x00" in fake.startup_messages[-1]
    assert client.exec_calls == 0
    assert client.inspect_calls == 0


async def test_postgres_that_stays_starting_up_fails_with_what_it_said():
    server, port = await _FakePostgres(starting=10**6).serve()
    client = _StartingDatabase("127.0.0.1")
    gateway = DockerGateway(client, concurrency=2, view_max_age=30)
    check = sidecar.ReadinessCheck(port=port, command=("pg_isready",), postgres_login=("ada", "notes"))
    try:
        with pytest.raises(sidecar.DatabaseNotReady, match="not ready after 1 s") as failure:
            await asyncio.wait_for(sidecar.wait_until_ready(gateway, "db", check, 1), 5)
    finally:
        server.close()
    assert "last check: the database system is starting up" in str(failure.value)
    assert client.exec_calls == 0


class _Checks:
    """A stand-in ownership check: counts its runs; the first one answers ``first_answer`` (or fails)."""

    def __init__(self, first_answer: bool | None):
        self.first_answer = first_answer
        self.runs = 0

    async def __call__(self) -> bool:
        self.runs += 1
        first = self.runs == 1
        await asyncio.sleep(0.05)
        if first and self.first_answer is None:
            raise RuntimeError("helper failed")
        return self.first_answer if first else False


async def test_a_class_of_new_volumes_waits_for_one_check_when_the_image_owns_its_home():
    knowledge = home.CopyOwnershipKnowledge()
    check = _Checks(first_answer=True)
    key = ("sha256:img", "/home/jovyan", "jovyan")
    skipped = await asyncio.gather(*(knowledge.ensure_owned(key, check) for _ in range(10)))
    assert check.runs == 1
    assert skipped.count(True) == 9
    assert await knowledge.ensure_owned(key, check) is True and check.runs == 1
    # another image (or path, or user) is learned on its own
    assert await knowledge.ensure_owned(("sha256:other", "/home/jovyan", "jovyan"), check) is False
    assert check.runs == 2


async def test_every_new_volume_is_fixed_when_the_image_does_not_own_its_home():
    knowledge = home.CopyOwnershipKnowledge()
    check = _Checks(first_answer=False)
    key = ("sha256:img", "/data", "1000")
    await asyncio.gather(*(knowledge.ensure_owned(key, check) for _ in range(5)))
    await knowledge.ensure_owned(key, check)
    assert check.runs == 6


async def test_a_failed_first_check_teaches_nothing():
    knowledge = home.CopyOwnershipKnowledge()
    check = _Checks(first_answer=None)
    key = ("sha256:img", "/home/jovyan", "jovyan")
    results = await asyncio.gather(*(knowledge.ensure_owned(key, check) for _ in range(3)), return_exceptions=True)
    assert isinstance(results[0], RuntimeError)
    assert results[1:] == [False, False]  # the others checked (and fixed) their own volumes
    assert check.runs == 3
    await knowledge.ensure_owned(key, check)  # and the next new volume is checked again
    assert check.runs == 4
