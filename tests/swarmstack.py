"""The test swarm on this machine (made by ``scripts/swarm``): the host's engine is the manager, each worker a Docker
engine in a container. Helpers to run ``docker`` on a worker, to find where a service's task runs, and the ``swarm``
fixture, which brings the swarm up on first use and back again whenever it is not whole (another test restarted
dockerd, which stops the workers).

Also :class:`Swarm`, the swarm as the Swarm spawner's tests see it through the manager's API, with its fixtures
``cluster`` and ``workers``, and :func:`remove_swarm_objects`, which removes what a test hub left on every node.

``tests/conftest.py`` imports the fixtures, so every test module can ask for ``swarm``, ``cluster`` and ``workers``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

SWARM_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "swarm"
MANAGED_LABEL = "org.multiuser-spawner.managed"
ROLE_LABEL = "org.multiuser-spawner.role"
WORKER_ROLE = "swarm-node"
# how many workers the tests ask for; `scripts/swarm up` keeps any more that another run started
WORKERS = int(os.environ.get("MUS_SWARM_WORKERS", "2"))


class TaskFailed(Exception):
    """A service's task was rejected or failed: Swarm's own reason is the message."""


@dataclass(frozen=True)
class Task:
    """Where one running task of a service is: the node's hostname and the container's id on that node."""

    node: str
    container_id: str


def docker_cli(*args: str, timeout: float = 120, input: bytes | None = None) -> subprocess.CompletedProcess:
    """``docker ARGS`` against the host's engine (the manager); output as text, never raising."""
    return subprocess.run(
        ["docker", *args], capture_output=True, text=input is None, input=input, timeout=timeout, check=False
    )


class SwarmStack:
    """The swarm as the tests see it. Node names are the workers' container names and their swarm hostnames."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    # -- bringing it up -------------------------------------------------------------------------------------------
    def up(self) -> None:
        """Run ``scripts/swarm up``; raise with its output when it fails."""
        result = subprocess.run(
            ["bash", str(SWARM_SCRIPT), "up", str(WORKERS)], capture_output=True, text=True, timeout=900, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"scripts/swarm up failed (exit {result.returncode}):\n{result.stderr[-3000:]}")

    def whole(self) -> bool:
        """Every worker container runs and every node of the swarm that is ours is Ready (one cheap look)."""
        workers = self.worker_containers()
        if len(workers) < WORKERS or any(c.status != "running" for c in workers):
            return False
        try:
            nodes = self.client.nodes.list()
        except docker.errors.APIError:
            return False
        ready = {n.attrs["Description"]["Hostname"] for n in nodes if n.attrs["Status"]["State"] == "ready"}
        if not (self.manager in ready and all(c.name in ready for c in workers)):
            return False
        # an entry of an earlier worker left Down: `scripts/swarm up` removes it, so the tests count nodes right
        if any(self._is_ours(n) and n.attrs["Status"]["State"] != "ready" for n in nodes):
            return False
        return all(self.worker_state(c.name) == "active" for c in workers)

    @staticmethod
    def _is_ours(node) -> bool:
        engine_labels = node.attrs["Description"].get("Engine", {}).get("Labels") or {}
        return engine_labels.get(MANAGED_LABEL) == "true"

    def ensure(self) -> None:
        if not self.whole():
            self.up()

    # -- what is there --------------------------------------------------------------------------------------------
    def worker_containers(self) -> list:
        containers = self.client.containers.list(
            all=True, filters={"label": [f"{MANAGED_LABEL}=true", f"{ROLE_LABEL}={WORKER_ROLE}"]}
        )
        return sorted(containers, key=lambda c: c.name)

    @property
    def workers(self) -> list[str]:
        """The workers' names (``mus-node1``, ...), which are also their hostnames in the swarm."""
        return [c.name for c in self.worker_containers()]

    @property
    def manager(self) -> str:
        """The manager's hostname in the swarm (this machine's)."""
        node_id = self.client.info()["Swarm"]["NodeID"]
        return self.client.nodes.get(node_id).attrs["Description"]["Hostname"]

    def worker_state(self, worker: str) -> str:
        """The swarm state as the worker's own engine sees it: ``active`` once its session with the manager is up.
        Right after a worker stopped or restarted, the manager still lists it Ready until a heartbeat is missed."""
        result = self.node_docker(worker, "info", "-f", "{{.Swarm.LocalNodeState}}", timeout=30)
        return result.stdout.strip() if result.returncode == 0 else f"unreachable: {result.stderr.strip()}"

    def node_states(self) -> dict[str, str]:
        """Hostname -> state (``ready``, ``down``...) of every node the manager lists."""
        return {n.attrs["Description"]["Hostname"]: n.attrs["Status"]["State"] for n in self.client.nodes.list()}

    # -- on a worker ----------------------------------------------------------------------------------------------
    def node_docker(self, node: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """``docker ARGS`` run by the engine of a worker (``docker exec NODE docker ARGS``)."""
        return docker_cli("exec", node, "docker", *args, timeout=timeout)

    def node_exec(self, node: str, *command: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """A command in the worker's own container (its cgroup tree and /proc are there)."""
        return docker_cli("exec", node, *command, timeout=timeout)

    def exec_in_task(self, task: Task, *command: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """A command inside a task's container, wherever it runs."""
        if task.node == self.manager:
            return docker_cli("exec", task.container_id, *command, timeout=timeout)
        return self.node_docker(task.node, "exec", task.container_id, *command, timeout=timeout)

    # -- services -------------------------------------------------------------------------------------------------
    def node_hostname(self, node_id: str) -> str:
        return self.client.nodes.get(node_id).attrs["Description"]["Hostname"]

    def running_task(self, service: str, timeout: float = 120) -> Task:
        """Wait until the service's task runs and say where; a rejected or failed task raises at once with Swarm's
        reason instead of waiting out the deadline."""
        deadline = time.monotonic() + timeout
        last = "no task yet"
        while time.monotonic() < deadline:
            for task in self.client.api.tasks(filters={"service": service}):
                status = task["Status"]
                if status["State"] == "running":
                    return Task(self.node_hostname(task["NodeID"]), status["ContainerStatus"]["ContainerID"])
                if status["State"] in ("rejected", "failed"):
                    raise TaskFailed(f"task of {service} {status['State']}: {status.get('Err', status['Message'])}")
                last = f"{status['State']}: {status['Message']}"
            time.sleep(0.5)
        raise TimeoutError(f"no task of {service} ran within {timeout} s (last: {last})")

    def task_node(self, service: str, timeout: float = 120) -> str:
        """The hostname of the node the service's running task is on."""
        return self.running_task(service, timeout).node

    def remove_service(self, service: str, timeout: float = 60) -> None:
        """Remove a service and wait until its tasks are gone (until then its networks are still in use)."""
        try:
            self.client.api.remove_service(service)
        except docker.errors.NotFound:
            return
        wait_until(lambda: not self._tasks_left(service), timeout, f"the tasks of {service} were not removed")

    def _tasks_left(self, service: str) -> list:
        try:
            return self.client.api.tasks(filters={"service": service})
        except docker.errors.NotFound:  # the filter names a service that is gone: so are its tasks
            return []


def wait_until(condition, timeout: float, what: str, interval: float = 0.5):
    """Call ``condition`` until it returns something true, and return that; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} (waited {timeout} s)")
        time.sleep(interval)


def _unavailable(reason: str):
    # as in conftest.py: a swarm test fails, never skips, when CI is set
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the swarm tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def swarm_stack(docker_client) -> SwarmStack:
    stack = SwarmStack(docker_client)
    try:
        stack.ensure()
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        _unavailable(f"no test swarm: {e}")
    return stack


@pytest.fixture
def swarm(swarm_stack) -> SwarmStack:
    """The test swarm, whole: brought back first if a test in between restarted dockerd or stopped a worker."""
    try:
        swarm_stack.ensure()
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        _unavailable(f"the test swarm could not be brought back: {e}")
    return swarm_stack


# -- the swarm as the Swarm spawner's tests see it: through the manager's API ------------------------------------


class Swarm:
    """The swarm the host's engine manages, and a way into each node's engine."""

    def __init__(self, client: docker.DockerClient):
        self.client = client
        self.api = client.api
        info = client.info()["Swarm"]
        if info.get("LocalNodeState") != "active" or not info.get("ControlAvailable"):
            _unavailable("the host's Docker engine is not a swarm manager (docker swarm init, or scripts/swarm up)")
        self.manager_id = info["NodeID"]

    def nodes(self) -> list[dict]:
        return [n for n in self.api.nodes() if n["Status"]["State"] == "ready"]

    def hostname(self, node_id: str) -> str:
        return self.api.inspect_node(node_id)["Description"]["Hostname"]

    def engine_run(self, node_id: str, args: list[str]) -> subprocess.CompletedProcess:
        """Run ``docker ARGS`` against the engine of a node: the host's for the manager, the worker's (a
        Docker-in-Docker container on this host, found by its host name) for a worker."""
        if node_id == self.manager_id:
            command = ["docker", *args]
        else:
            command = ["docker", "exec", "-i", self.worker_container(node_id).name, "docker", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    def worker_container(self, node_id: str):
        """The Docker-in-Docker container on this host that is the worker ``node_id``, found by its host name."""
        hostname = self.hostname(node_id)
        (worker,) = [c for c in self.client.containers.list() if c.attrs["Config"]["Hostname"] == hostname]
        return worker

    def task(self, service: str) -> dict:
        tasks = self.api.tasks(filters={"service": service})
        return max(tasks, key=lambda t: t["CreatedAt"])

    def exec_in_service(self, service: str, command: str) -> tuple[int, str]:
        """Run a shell command in the running task of ``service``, on whichever node it is."""
        task = self.task(service)
        container = task["Status"]["ContainerStatus"]["ContainerID"]
        done = self.engine_run(task["NodeID"], ["exec", container, "sh", "-c", command])
        return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def cluster(docker_client, swarm_stack) -> Swarm:
    """The swarm, brought up (``scripts/swarm up``) when it is not whole."""
    swarm_stack.ensure()
    return Swarm(docker_client)


@pytest.fixture(scope="module")
def workers(cluster) -> list[str]:
    """The ready worker nodes; two or more are needed to show users spread and pinned across hosts."""
    found = [n["ID"] for n in cluster.nodes() if n["ID"] != cluster.manager_id]
    if len(found) < 2:
        _unavailable(f"the swarm has {len(found)} ready worker(s); `scripts/swarm up` adds two")
    return found


def remove_swarm_objects(cluster: Swarm, prefix: str) -> None:
    """Services, networks and volume records named ``prefix-*``, and the volumes the tasks made on each node."""
    api = cluster.api
    removed = set()
    for service in api.services():
        if service["Spec"]["Name"].startswith(f"{prefix}-"):
            api.remove_service(service["ID"])
            removed.add(service["ID"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(t["ServiceID"] in removed for t in api.tasks()):
        time.sleep(0.5)
    for config in api.configs():
        if config["Spec"]["Name"].startswith(f"{prefix}-"):
            api.remove_config(config["ID"])
    for node in cluster.nodes():
        for _ in range(60):  # the tasks' containers leave a moment after their services
            # the users' volumes (prefix-...) and the hub's volume of a shared export's root (prefix_...)
            found = cluster.engine_run(node["ID"], ["volume", "ls", "-q", "--filter", f"name={prefix}"])
            listed = [v for v in found.stdout.split() if v.startswith((f"{prefix}-", f"{prefix}_"))]
            if not listed:
                break
            if cluster.engine_run(node["ID"], ["volume", "rm", "-f", *listed]).returncode == 0:
                break
            time.sleep(1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # a network is in use until the last task's endpoint has left it
        left = [n for n in api.networks() if n["Name"].startswith(f"{prefix}-")]
        if not left:
            break
        for network in left:
            with contextlib.suppress(docker.errors.APIError):
                api.remove_network(network["Id"])
        time.sleep(0.5)
