"""Pure pieces: templates, progress, the gateway's concurrency, the shared container view, and
the waits for a server and a database (against loopback ports and a stand-in Docker client)."""

from __future__ import annotations

import asyncio
import threading
import time

import docker.errors
import pytest
import requests

from multiuser_spawner import home, startup, tcp
from multiuser_spawner.docker_gateway import ContainerView, DockerGateway, split_image_tag
from multiuser_spawner.progress import SpawnProgress, pull_percent
from multiuser_spawner.spawner import docker_failure_message, fill_template


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


class _JoiningClient:
    """Stands in for docker-py's network joins, each a slow call, as Docker makes an overlay's first endpoint."""

    def __init__(self):
        self.lock = threading.Lock()
        self.joining: dict[str, int] = {}
        self.most_per_container = 0
        self.most_containers = 0
        self.finished: list[str] = []

    def connect_container_to_network(self, container, network, aliases=None):
        with self.lock:
            self.joining[container] = self.joining.get(container, 0) + 1
            self.most_per_container = max(self.most_per_container, self.joining[container])
            self.most_containers = max(self.most_containers, sum(1 for n in self.joining.values() if n))
        time.sleep(0.1)
        with self.lock:
            self.joining[container] -= 1
            self.finished.append(f"join {network}")

    def inspect_network(self, name):
        with self.lock:
            self.finished.append("inspect")
        return {"Name": name}


async def test_a_containers_network_joins_queue_outside_the_pool():
    client = _JoiningClient()
    gateway = DockerGateway(client, concurrency=2, view_max_age=30)
    joins = [asyncio.ensure_future(gateway.connect_network(f"n{i}", "hub")) for i in range(6)]
    await asyncio.sleep(0)  # every join is waiting before the other request comes
    await gateway.inspect_network("other")
    await asyncio.gather(*joins)
    assert client.most_per_container == 1
    # one thread of the two stays free for everything else: the request did not wait for the six joins
    assert client.finished.index("inspect") <= 1, client.finished


async def test_different_containers_join_networks_side_by_side():
    client = _JoiningClient()
    gateway = DockerGateway(client, concurrency=4, view_max_age=30)
    await asyncio.gather(*(gateway.connect_network(f"n{i}", f"c{i % 2}") for i in range(4)))
    assert client.most_per_container == 1
    assert client.most_containers == 2


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
    pauses = tcp.connect_intervals(first=0.05, most=0.25)
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
    checks: dict[str, int] = dict.fromkeys(servers, 0)  # "is it still running?" asked, per server
    ask_view = gateway.view.state

    async def counted_state(name, **kwargs):
        checks[name] += 1
        return await ask_view(name, **kwargs)

    gateway.view.state = counted_state
    listeners = []

    async def start_and_wait(name: str) -> bool:
        port = await refusing_port()  # like a server still starting
        waiting = asyncio.ensure_future(startup.wait_until_listening(gateway, name, "127.0.0.1", port, timeout=30))
        # the server starts listening only once every server has asked a few times whether its container runs
        while min(checks.values()) < 5:
            assert not waiting.done(), waiting
            await asyncio.sleep(0.01)
        listeners.append(await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port))
        return await waiting

    began = time.monotonic()
    try:
        assert all(await asyncio.gather(*(start_and_wait(name) for name in servers)))
    finally:
        for listener in listeners:
            listener.close()
    waited = time.monotonic() - began
    assert client.inspect_calls == 0
    # at most one list per STATE_CHECK_INTERVAL of waiting, for all twenty together ...
    assert client.list_calls <= waited / startup.STATE_CHECK_INTERVAL + 1, (client.list_calls, waited)
    # ... each answering the twenty servers' questions together, never one server's alone
    assert sum(checks.values()) >= 100
    assert client.list_calls * 10 <= sum(checks.values()), (client.list_calls, sum(checks.values()))


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
    assert await tcp.probe_tcp("127.0.0.1", port) == tcp.TCP_OPEN
    listener.close()
    await listener.wait_closed()
    assert await tcp.probe_tcp("127.0.0.1", port) == tcp.TCP_REFUSED
    assert not await tcp.accepts_tcp("127.0.0.1", port)


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


def test_a_docker_error_outside_the_gateway_becomes_a_sentence_that_names_docker():
    gone = requests.ConnectionError(("Connection aborted.", FileNotFoundError(2, "No such file or directory")))
    assert docker_failure_message(gone).startswith("the Docker engine could not be reached")
    refused = docker.errors.APIError("500 Server Error", explanation="driver failed")
    assert docker_failure_message(refused).startswith("a request to the Docker engine failed")
    assert docker_failure_message(ValueError("not Docker's")) is None


@pytest.mark.parametrize(
    ("state", "by_a_signal"),
    [
        ({"ExitCode": 143, "OOMKilled": False}, True),  # SIGTERM: a docker stop, or the engine stopping
        ({"ExitCode": 137, "OOMKilled": False}, True),  # SIGKILL after the grace period
        ({"ExitCode": 137, "OOMKilled": True}, False),  # its own memory limit
        ({"ExitCode": 1, "OOMKilled": False}, False),  # its own failure
    ],
)
def test_a_workload_stopped_by_a_signal_is_told_from_one_that_failed(state, by_a_signal):
    assert startup.ServerExited("stopped", state).stopped_by_a_signal is by_a_signal


async def test_an_engine_that_does_not_answer_is_stopping(tmp_path):
    gone = DockerGateway(
        docker.APIClient(base_url=f"unix://{tmp_path}/docker.sock", version="1.41"), concurrency=1, view_max_age=1
    )
    assert await gone.engine_stopping(within=0)
