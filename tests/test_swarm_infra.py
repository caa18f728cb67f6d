"""The test swarm itself (``scripts/swarm``): several real nodes on this machine, on which services are placed where
they are told, reach each other across nodes over an overlay network, are reachable from a container on the
manager (where the hub runs), and have their limits enforced in the worker's own cgroups.

Every service and network here is created by the test and removed at its end.
"""

from __future__ import annotations

import secrets

import docker
import pytest
from swarmstack import MANAGED_LABEL, SwarmStack, Task, wait_until

from hubstack import SINGLEUSER_IMAGE

pytestmark = pytest.mark.docker

TEST_LABEL = "org.multiuser-spawner.test"
PORT = 8888
# serves one file, /node, holding the hostname of the node the task landed on (a Swarm template in its env)
SERVE_NODE_NAME = [
    "sh",
    "-c",
    f'mkdir -p /tmp/www && echo "$NODE" > /tmp/www/node && cd /tmp/www && exec python3 -m http.server {PORT}',
]
FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode().strip())"


@pytest.fixture
def objects(swarm: SwarmStack):
    """Create services and overlay networks with a prefix and labels of this test's own; all removed at the end."""
    prefix = "t" + secrets.token_hex(4)
    labels = {MANAGED_LABEL: "true", TEST_LABEL: prefix}
    services: list[str] = []
    networks: list = []
    containers: list = []

    class Objects:
        def network(self) -> str:
            name = f"{prefix}-net"
            networks.append(swarm.client.networks.create(name, driver="overlay", attachable=True, labels=labels))
            return name

        def service(self, name: str, node: str, command: list[str], network: str | None = None, **kwargs) -> str:
            """A one-replica dnsrr service of the notebook image pinned to ``node``; returns its full name."""
            full_name = f"{prefix}-{name}"
            swarm.client.services.create(
                SINGLEUSER_IMAGE,
                command=command,
                name=full_name,
                labels=labels,
                container_labels=labels,
                env=["NODE={{.Node.Hostname}}"],
                constraints=[f"node.hostname=={node}"],
                endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"),
                networks=[network] if network else [],
                restart_policy=docker.types.RestartPolicy(condition="none"),
                **kwargs,
            )
            services.append(full_name)
            return full_name

        def container_on_manager(self, network: str):
            container = swarm.client.containers.run(
                SINGLEUSER_IMAGE, ["sleep", "infinity"], detach=True, network=network, labels=labels
            )
            containers.append(container)
            return container

    yield Objects()
    for container in containers:
        container.remove(force=True)
    for service in services:
        swarm.remove_service(service)
    for network in networks:
        network.remove()


def fetch_from_task(swarm: SwarmStack, task: Task, url: str) -> str:
    """What ``url`` answers when fetched from inside a task's container, or "" while it cannot be reached."""
    result = swarm.exec_in_task(task, "python3", "-c", FETCH, url)
    return result.stdout.strip() if result.returncode == 0 else ""


def test_the_manager_and_two_workers_are_ready(swarm):
    states = swarm.node_states()
    assert len(swarm.workers) >= 2
    assert states.get(swarm.manager) == "ready", states
    for worker in swarm.workers:
        assert states.get(worker) == "ready", states
        assert swarm.worker_state(worker) == "active"


def test_a_service_constrained_to_a_worker_runs_there(swarm, objects):
    worker = swarm.workers[-1]
    service = objects.service("pinned", worker, ["sleep", "infinity"])

    task = swarm.running_task(service)

    assert task.node == worker
    # the container really is on that worker's engine, and not on the manager's
    on_worker = swarm.node_docker(worker, "ps", "-q", "--no-trunc", "--filter", f"label={TEST_LABEL}")
    assert task.container_id in on_worker.stdout.split()
    assert not swarm.client.containers.list(filters={"id": task.container_id})


def test_tasks_on_two_workers_reach_each_other_by_name(swarm, objects):
    first, second = swarm.workers[:2]
    network = objects.network()
    server = objects.service("server", first, SERVE_NODE_NAME, network)
    client = objects.service("client", second, ["sleep", "infinity"], network)
    server_task, client_task = swarm.running_task(server), swarm.running_task(client)
    assert (server_task.node, client_task.node) == (first, second)

    answer = wait_until(
        lambda: fetch_from_task(swarm, client_task, f"http://{server}:{PORT}/node"),
        60,
        f"{client} on {second} never reached {server} on {first} by name",
    )

    assert answer == first


def test_a_container_on_the_manager_reaches_a_task_on_a_worker(swarm, objects):
    worker = swarm.workers[0]
    network = objects.network()
    server = objects.service("server", worker, SERVE_NODE_NAME, network)
    swarm.running_task(server)
    # the hub's situation: a plain container on the manager, attached to the server's overlay network
    container = objects.container_on_manager(network)
    on_manager = Task(swarm.manager, container.id)

    answer = wait_until(
        lambda: fetch_from_task(swarm, on_manager, f"http://{server}:{PORT}/node"),
        60,
        f"a container on the manager never reached {server} on {worker}",
    )

    assert answer == worker


def test_a_memory_limit_is_enforced_in_the_workers_cgroup(swarm, objects):
    worker = swarm.workers[0]
    limit = 96 * 1024 * 1024
    service = objects.service(
        "limited", worker, ["sleep", "infinity"], resources=docker.types.Resources(mem_limit=limit)
    )
    task = swarm.running_task(service)

    # the task's process, as the worker's engine sees it, and the memory cgroup the kernel put it in
    pid = swarm.node_docker(worker, "inspect", "-f", "{{.State.Pid}}", task.container_id).stdout.strip()
    cgroups = swarm.node_exec(worker, "cat", f"/proc/{pid}/cgroup").stdout
    memory_cgroup = next(line.split(":", 2)[2] for line in cgroups.splitlines() if ":memory:" in line)
    limit_file = swarm.node_exec(worker, "cat", f"/sys/fs/cgroup/memory{memory_cgroup}/memory.limit_in_bytes")

    # under the worker's own cgroup parent, so the nodes' containers stay apart in the machine's one cgroup tree
    assert memory_cgroup.startswith(f"/{worker}/"), memory_cgroup
    assert int(limit_file.stdout) == limit
