"""MultiUserSwarmSpawner on a real swarm with a real hub: notebooks and their Postgres as Swarm services on private
overlay networks, users kept on the node that holds their files, failures reported in seconds with Swarm's reason.

The host's engine is the manager and two Docker-in-Docker containers are the workers: ``scripts/swarm up`` (run by
the ``swarm_stack`` fixture whenever the swarm is not whole) makes them. Without a swarm the tests skip, and fail
when CI is set.

How the hub reaches the servers: a hub belongs in a container on a manager, attached to each server's overlay
network (a process on the host cannot join an overlay). The test hub is the host's own JupyterHub process run inside
the network namespace of such a container (``nsenter --net``): the network is exactly a containerised hub's, the
files are the checkout's. The spawner joins that container (``hub_container_name``) to every server's network, and
the notebooks reach the hub by the container's name there.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from conftest import IN_CI, new_prefix
from swarmstack import Swarm, remove_swarm_objects
from test_oom_notice import EXHAUST_MEMORY

from hubstack import POSTGRES_IMAGE, SINGLEUSER_IMAGE, HubStack, cleanup_prefix, spawn_failure_message, wait_until
from multiuser_spawner import names
from multiuser_spawner.swarm import SwarmGateway
from multiuser_spawner.swarm_jobs import NOT_OURS, volume_removal_job

pytestmark = pytest.mark.docker

LABEL_USER = "org.multiuser-spawner.user"
LABEL_NODE = "org.multiuser-spawner.node"


# -- a hub in a container's network namespace on the manager --------------------------------------------------------

CONFIG = f"""
c.JupyterHub.spawner_class = "multiuser-swarm"
c.JupyterHub.hub_ip = "0.0.0.0"
c.Spawner.poll_interval = 2
c.MultiUserSpawner.remove_volumes_on_delete = True
c.MultiUserSpawner.services = {{"db": {{"preset": "postgres", "image": {POSTGRES_IMAGE!r}}}}}
c.MultiUserSpawner.group_overrides = {{
    "1-small": {{"groups": ["small"], "spawner_override": {{
        "cpu_limit": 0.5, "mem_limit": "300M", "cpu_guarantee": 0.25, "mem_guarantee": "200M"}}}},
    "2-nowhere": {{"groups": ["nowhere"], "spawner_override": {{
        "swarm_placement_constraints": ["node.labels.no-such-label==yes"]}}}},
    "3-workers": {{"groups": ["workers"], "spawner_override": {{
        "swarm_placement_constraints": ["node.role==worker"]}}}},
    "4-crash": {{"groups": ["crash"], "spawner_override": {{"cmd": ["sh", "-c", "echo my last words; exit 3"]}}}},
    "5-tiny": {{"groups": ["tiny"], "spawner_override": {{"mem_limit": "200M"}}}},
}}
"""


class SwarmHubs:
    def __init__(self, client: docker.DockerClient, tmp_path_factory):
        self.client = client
        self.tmp_path_factory = tmp_path_factory
        self.hubs: list[HubStack] = []
        self.holders: list = []

    def make(self, users: dict[str, list[str]], extra_config: str = "") -> HubStack:
        prefix = new_prefix()
        holder = self.client.containers.run(
            SINGLEUSER_IMAGE,
            ["sleep", "infinity"],
            name=f"{prefix}-hub",
            labels={"multiuser-spawner-tests.hub": prefix},
            detach=True,
        )
        self.holders.append(holder)
        holder.reload()
        pid = holder.attrs["State"]["Pid"]
        address = holder.attrs["NetworkSettings"]["IPAddress"]
        hub = HubStack(
            workdir=self.tmp_path_factory.mktemp("swarmhub"),
            prefix=prefix,
            users=users,
            extra_config=textwrap.dedent(CONFIG) + textwrap.dedent(extra_config),
            host=address,
            launcher=["nsenter", f"--target={pid}", "--net"],
        )
        # The proxy reaches the hub in their shared namespace; a notebook reaches it by the container's name on
        # its overlay (the hub's process resolves names with the host's resolver, which knows no container).
        hub.extra_config += textwrap.dedent(
            f"""
            c.JupyterHub.hub_connect_ip = "127.0.0.1"
            c.Spawner.hub_connect_url = "http://{holder.name}:{hub.hub_port}"
            c.MultiUserSpawner.hub_container_name = {holder.name!r}
            """
        )
        self.hubs.append(hub)
        hub.start()
        return hub

    def cleanup(self, cluster: Swarm) -> None:
        for hub in self.hubs:
            hub.stop()
        for holder in self.holders:  # first: its attachments keep the overlays in use
            holder.remove(force=True)
        for hub in self.hubs:
            remove_swarm_objects(cluster, hub.prefix)
            cleanup_prefix(self.client, hub.prefix)


@pytest.fixture(scope="module")
def swarm_hubs(docker_client, cluster, tmp_path_factory):
    hubs = SwarmHubs(docker_client, tmp_path_factory)
    yield hubs
    hubs.cleanup(cluster)


USERS = {
    "ada": [],
    "bob": [],
    "cy": ["small"],
    "dee": [],
    "eve": [],
    "fay": ["workers"],
    "gus": [],
    "hal": ["crash"],
    "ike": ["workers"],
    "jan": [],
    "kim": ["tiny", "workers"],
    **{f"big{i}": ["big"] for i in range(1, 6)},
    "nobody": ["nowhere"],
}


@pytest.fixture(scope="module")
def hub(swarm_hubs, docker_client) -> HubStack:
    # Big users reserve 30% of a node's memory (every node here offers the machine's): three fit on one node,
    # not five, so Swarm, which places by reservations, puts five of them on two nodes or more.
    reservation = int(docker_client.info()["MemTotal"] * 0.3)
    big = {"groups": ["big"], "spawner_override": {"mem_limit": reservation + 2**30, "mem_guarantee": reservation}}
    return swarm_hubs.make(USERS, f"c.MultiUserSpawner.group_overrides['5-big'] = {big!r}\n")


def notebook_service(hub: HubStack, user: str) -> str:
    return hub.user(user)["servers"][""]["state"]["object_name"]


PSQL_WRITE = "CREATE TABLE IF NOT EXISTS notes (body text); INSERT INTO notes VALUES ('kept in postgres')"


def run_sql(cluster: Swarm, service: str, sql: str) -> tuple[int, str]:
    """Run SQL from the notebook, through its PG* variables (the service's host name, user and password)."""
    code = (
        "import psycopg\nwith psycopg.connect('') as c:\n"
        f"    r = c.execute({sql!r})\n    print(r.fetchall() if r.description else 'done')"
    )
    return cluster.exec_in_service(service, f"python3 -c {quote(code)}")


def quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


# -- tests ----------------------------------------------------------------------------------------------------------


def test_a_notebook_and_its_postgres_run_as_swarm_services_on_a_private_overlay(hub, cluster):
    hub.start_server("ada")
    name = notebook_service(hub, "ada")
    assert "." not in name
    service = cluster.api.inspect_service(name)
    spec = service["Spec"]
    assert spec["Mode"] == {"Replicated": {"Replicas": 1}}
    assert spec["EndpointSpec"]["Mode"] == "dnsrr"
    template = spec["TaskTemplate"]
    assert template["RestartPolicy"]["Condition"] == "none"
    assert {m["Type"] for m in template["ContainerSpec"]["Mounts"]} == {"volume"}
    assert template["ContainerSpec"]["CapabilityDrop"] == ["ALL"]
    (network,) = template["Networks"]
    net = cluster.api.inspect_network(network["Target"])
    assert net["Driver"] == "overlay" and net["Attachable"] is True
    db = cluster.api.inspect_service(f"{hub.prefix}-ada_db")
    assert db["Spec"]["TaskTemplate"]["Networks"][0]["Aliases"] == ["db"]
    assert run_sql(cluster, name, PSQL_WRITE) == (0, "done\n")
    assert run_sql(cluster, name, "SELECT body FROM notes") == (0, "[('kept in postgres',)]\n")
    # through the proxy, as a user's browser would
    assert hub.server_api("ada", "api/status").status_code == 200


def test_stop_removes_services_waits_for_tasks_then_removes_the_network(hub, cluster):
    hub.start_server("bob")
    network = f"{hub.prefix}-bob_net"
    services = [notebook_service(hub, "bob"), f"{hub.prefix}-bob_db"]
    ids = [cluster.api.inspect_service(s)["ID"] for s in services]
    hub.stop_server("bob")
    assert [s for s in cluster.api.services() if s["ID"] in ids] == []
    assert [t for t in cluster.api.tasks() if t["ServiceID"] in ids] == []
    assert cluster.api.networks(names=[network]) == []


def test_a_returning_user_finds_their_file_and_rows_on_the_node_that_holds_them(hub, cluster):
    hub.start_server("dee")
    name = notebook_service(hub, "dee")
    assert cluster.exec_in_service(name, "echo 'my essay' > ~/essay.txt")[0] == 0
    assert run_sql(cluster, name, PSQL_WRITE) == (0, "done\n")
    first_node = cluster.task(name)["NodeID"]
    record = [c for c in cluster.api.configs() if c["Spec"]["Name"] == f"{hub.prefix}-dee_home"]
    assert record[0]["Spec"]["Labels"][LABEL_NODE] == first_node
    hub.stop_server("dee")
    hub.start_server("dee")
    assert cluster.task(name)["NodeID"] == first_node
    constraints = cluster.api.inspect_service(name)["Spec"]["TaskTemplate"]["Placement"]["Constraints"]
    assert f"node.id=={first_node}" in constraints
    assert cluster.exec_in_service(name, "cat ~/essay.txt") == (0, "my essay\n")
    assert run_sql(cluster, name, "SELECT body FROM notes") == (0, "[('kept in postgres',)]\n")


def test_a_constraint_nobody_meets_fails_the_spawn_in_seconds_with_swarms_reason(hub, cluster):
    began = time.monotonic()
    message = spawn_failure_message(hub, "nobody")
    elapsed = time.monotonic() - began
    assert "no suitable node" in message, message
    assert elapsed < 20, f"the spawn took {elapsed:.1f} s to fail"
    assert [s for s in cluster.api.services() if s["Spec"]["Name"].startswith(f"{hub.prefix}-nobody")] == []


def test_a_notebook_that_dies_while_starting_fails_the_spawn_with_its_exit_and_last_words(hub, cluster):
    message = spawn_failure_message(hub, "hal")
    assert "task failed, exit code 3" in message, message
    assert "my last words" in message, message
    assert [s for s in cluster.api.services() if s["Spec"]["Name"].startswith(f"{hub.prefix}-hal")] == []


def test_limits_and_reservations_are_in_the_spec_and_limits_in_the_nodes_cgroup(hub, cluster):
    hub.start_server("cy")
    name = notebook_service(hub, "cy")
    resources = cluster.api.inspect_service(name)["Spec"]["TaskTemplate"]["Resources"]
    assert resources["Limits"]["MemoryBytes"] == 300 * 1024**2
    assert resources["Limits"]["NanoCPUs"] == 500_000_000
    assert resources["Reservations"] == {"NanoCPUs": 250_000_000, "MemoryBytes": 200 * 1024**2}
    code, out = cluster.exec_in_service(
        name,
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null"
        " || cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max",
    )
    assert code == 0, out
    assert str(300 * 1024**2) in out.split()
    assert "50000" in out.split()


def test_a_users_postgres_is_unreachable_from_another_users_notebook(hub, cluster):
    hub.start_server("ada")
    hub.start_server("eve")
    ada_db = cluster.task(f"{hub.prefix}-ada_db")
    (address,) = [
        a["Addresses"][0].split("/")[0]
        for a in ada_db["NetworksAttachments"]
        if a["Network"]["Spec"]["Name"] == f"{hub.prefix}-ada_net"
    ]
    # A Postgres answers an SSL request with one byte, S or N. Only that proves the server was reached: on some
    # networks (this machine's among them) an outbound connection to an unknown address is accepted by a proxy.
    probe = (
        "import socket\ns = socket.socket(); s.settimeout(3)\n"
        f"try:\n    s.connect(({address!r}, 5432)); s.sendall(bytes([0, 0, 0, 8, 4, 210, 22, 47]))\n"
        "    print('postgres' if s.recv(1) in (b'S', b'N') else 'not postgres')\n"
        "except OSError as e:\n    print('unreachable', e)"
    )
    code, out = cluster.exec_in_service(notebook_service(hub, "eve"), f"python3 -c {quote(probe)}")
    assert code == 0 and not out.startswith("postgres"), (out, address)
    # and ada's own notebook does reach it, at the same address, whichever node each runs on
    code, out = cluster.exec_in_service(notebook_service(hub, "ada"), f"python3 -c {quote(probe)}")
    assert (code, out) == (0, "postgres\n")


def test_deleting_a_user_removes_their_services_network_and_volumes_on_their_nodes(hub, cluster):
    hub.start_server("gus")
    hub.start_server("jan")
    prefix = f"{hub.prefix}-gus"
    records = [c for c in cluster.api.configs() if c["Spec"]["Name"].startswith(prefix)]
    # each volume lives on the node its record names: the home, and the database's data
    where = {c["Spec"]["Name"]: c["Spec"]["Labels"][LABEL_NODE] for c in records}
    assert sorted(where) == [f"{prefix}_db", f"{prefix}_home"], where
    for volume, node in where.items():
        assert volume in node_volumes(cluster, node), (volume, node)
    jan_volumes = {
        c["Spec"]["Name"]: c["Spec"]["Labels"][LABEL_NODE]
        for c in cluster.api.configs()
        if c["Spec"]["Name"].startswith(f"{hub.prefix}-jan")
    }
    r = hub.request("DELETE", "/users/gus")  # a running user: the hub stops the server, then deletes
    assert r.status_code == 204, r.text
    assert [s for s in cluster.api.services() if s["Spec"]["Name"].startswith(prefix)] == []
    assert [n for n in cluster.api.networks() if n["Name"].startswith(prefix)] == []
    assert [c for c in cluster.api.configs() if c["Spec"]["Name"].startswith(prefix)] == []
    for volume, node in where.items():
        assert volume not in node_volumes(cluster, node), (volume, node)
    # nothing of another user's goes, and the removal's own tasks are gone
    for volume, node in jan_volumes.items():
        assert volume in node_volumes(cluster, node), (volume, node)
    assert [s for s in cluster.api.services() if s["Spec"]["Name"].startswith(f"{hub.prefix}-rm-")] == []


def node_volumes(cluster: Swarm, node_id: str) -> list[str]:
    done = cluster.engine_run(node_id, ["volume", "ls", "-q"])
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_a_volume_is_removed_on_its_node_only_when_its_labels_are_the_users(docker_client):
    """The removal's script, run against this host's engine as a node's task runs it against its node's."""
    prefix = new_prefix()
    owner = names.Owner(hub=prefix, user="ada", user_id="7", user_created="2026-01-01T00:00:00Z")
    theirs = {**owner.labels(names.ROLE_HOME), names.LABEL_USER_ID: "8"}  # a newer user called ada
    docker_client.volumes.create(f"{prefix}-ada_home", labels=theirs)
    docker_client.volumes.create(f"{prefix}-ada_db", labels=owner.labels(names.ROLE_SERVICE_DATA, "db"))
    try:
        for volume, code, still_there in ((f"{prefix}-ada_home", NOT_OURS, True), (f"{prefix}-ada_db", 0, False)):
            command = volume_removal_job(volume, "node", SINGLEUSER_IMAGE, owner).command
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
            assert done.returncode == code, done.stdout + done.stderr
            assert (volume in [v.name for v in docker_client.volumes.list()]) is still_there, done.stdout
    finally:
        cleanup_prefix(docker_client, prefix)


async def test_the_polls_of_many_servers_share_one_task_list(hub, cluster):
    for user in ("ada", "bob"):
        hub.start_server(user)
    services = [cluster.api.inspect_service(notebook_service(hub, u))["ID"] for u in ("ada", "bob")]
    gateway = SwarmGateway.connect({}, concurrency=4, view_max_age=30)
    # forty polls at once, as a hub of forty servers polls: one task list (and one node list) answers them all
    tasks = await asyncio.gather(*(gateway.tasks_view.latest(service) for service in services * 20))
    assert gateway.tasks_view.refreshes == 1
    assert {task["Status"]["State"] for task in tasks} == {"running"}


def test_a_hub_restart_re_adopts_the_running_services(hub, cluster):
    hub.start_server("ada")
    name = notebook_service(hub, "ada")
    service_id = cluster.api.inspect_service(name)["ID"]
    hub.restart()
    hub.wait_ready("ada")
    assert hub.server_api("ada", "api/status").status_code == 200
    assert cluster.api.inspect_service(name)["ID"] == service_id
    assert run_sql(cluster, name, "SELECT 1") == (0, "[(1,)]\n")


# -- across nodes ---------------------------------------------------------------------------------------------------


def test_users_spread_over_nodes_and_reach_their_postgres_across_nodes(hub, cluster, workers):
    users = [f"big{i}" for i in range(1, 6)]
    for user in users:
        hub.start_server(user)
    nodes = {user: cluster.task(notebook_service(hub, user))["NodeID"] for user in users}
    assert len(set(nodes.values())) >= 2, nodes
    crossing = [u for u in users if cluster.task(f"{hub.prefix}-{u}_db")["NodeID"] != nodes[u]]
    for user in crossing or users:
        assert run_sql(cluster, notebook_service(hub, user), "SELECT 1") == (0, "[(1,)]\n")
    if IN_CI:
        assert crossing, "no user's postgres landed on another node than their notebook"


def test_a_drained_pinned_node_fails_the_spawn_at_once_naming_the_node(hub, cluster, workers):
    hub.start_server("fay")
    node_id = cluster.task(notebook_service(hub, "fay"))["NodeID"]
    assert node_id in workers  # fay's tier is placed on workers: the manager is never drained here
    hostname = cluster.hostname(node_id)
    hub.stop_server("fay")
    node = cluster.api.inspect_node(node_id)
    spec = {**node["Spec"], "Availability": "drain"}
    cluster.api.update_node(node_id, node["Version"]["Index"], spec)
    try:
        began = time.monotonic()
        message = spawn_failure_message(hub, "fay")
        assert hostname in message and "drain" in message, message
        assert time.monotonic() - began < 10
    finally:
        node = cluster.api.inspect_node(node_id)
        cluster.api.update_node(node_id, node["Version"]["Index"], {**node["Spec"], "Availability": "active"})


def test_a_worker_killed_while_its_user_works_makes_poll_report_the_server_stopped(hub, cluster, workers, swarm_stack):
    hub.start_server("ike")
    node_id = cluster.task(notebook_service(hub, "ike"))["NodeID"]
    assert node_id in workers
    cluster.worker_container(node_id).kill()
    try:
        # the manager marks the node down after missed heartbeats; the hub's next poll then reports the server gone
        deadline = time.monotonic() + 180
        while "" in hub.user("ike")["servers"]:
            assert time.monotonic() < deadline, f"the hub still lists ike's server:\n{hub.log_tail()}"
            time.sleep(1)
        assert f"Node {cluster.hostname(node_id)} of ike's server is down" in hub.log_tail(400)
    finally:
        swarm_stack.ensure()  # the worker comes back for the next tests


def test_a_user_whose_notebook_on_a_worker_ran_out_of_memory_is_told_so(hub, cluster, workers):
    hub.start_server("kim")
    service = f"{hub.prefix}-kim"
    assert cluster.task(service)["NodeID"] in workers
    cluster.exec_in_service(service, EXHAUST_MEMORY)
    wait_until(lambda: hub.user("kim")["servers"] == {}, 90, "the hub to see the server stop")
    logged = f"Container {service} was killed by its memory limit (200 MB): the server of kim stopped"
    assert hub.log_path.read_text().count(logged) == 1
    # kept in the server's state, where the next spawn's first progress message reads it (test_oom_notice.py)
    r = hub.request("GET", "/users/kim?include_stopped_servers=1")
    assert r.json()["servers"][""]["state"]["multiuser_last_stop"] == {
        "reason": "oom-killed",
        "container": service,
        "mem_limit": 200 * 2**20,
    }, r.json()
    hub.start_server("kim")
    hub.stop_server("kim")
    # the node was asked by a job of the hub's, which is gone
    assert [s for s in cluster.api.services() if s["Spec"]["Name"].startswith(f"{hub.prefix}-oom-")] == []


# -- shared volumes -------------------------------------------------------------------------------------------------

#: the host directory every node of the test swarm mounts at the same path (`scripts/swarm`), as every host of a real
#: swarm mounts the same NFS export
SHARED_DIRECTORY = Path(os.environ.get("MUS_SWARM_SHARED", "/srv/mus-swarm-shared"))


@pytest.fixture
def export(cluster) -> Iterator[Path]:
    """A directory of this test's own on the shared directory: the export's root, which an admin prepares."""
    root = SHARED_DIRECTORY / f"test-{new_prefix()}"
    root.mkdir(parents=True)
    yield root
    shutil.rmtree(root)


def set_availability(cluster: Swarm, node_id: str, availability: str) -> None:
    node = cluster.api.inspect_node(node_id)
    cluster.api.update_node(node_id, node["Version"]["Index"], {**node["Spec"], "Availability": availability})


def test_with_shared_volumes_a_drained_nodes_user_starts_elsewhere_with_their_file_and_rows(
    swarm_hubs, cluster, workers, export
):
    options = {"type": "none", "o": "bind", "device": f"{export}/{{volume}}"}
    hub = swarm_hubs.make({"sal": ["workers"]}, f"c.MultiUserSwarmSpawner.volume_driver_options = {options!r}\n")
    hub.start_server("sal")
    name = notebook_service(hub, "sal")
    assert cluster.exec_in_service(name, "echo 'my essay' > ~/essay.txt && id -u") == (0, "1000\n")
    assert run_sql(cluster, name, PSQL_WRITE) == (0, "done\n")
    # each volume is a directory of its own on the export, the home the notebook user's
    home = export / f"{hub.prefix}-sal_home"
    assert (home / "essay.txt").read_text() == "my essay\n"
    assert home.stat().st_uid == 1000
    assert (export / f"{hub.prefix}-sal_db" / "PG_VERSION").is_file()
    # not pinned to a node; the record remembers the directory was made
    (record,) = [c for c in cluster.api.configs() if c["Spec"]["Name"] == f"{hub.prefix}-sal_home"]
    assert LABEL_NODE not in record["Spec"]["Labels"]
    assert record["Spec"]["Labels"]["org.multiuser-spawner.shared-directory"] == str(home)
    first_node = cluster.task(name)["NodeID"]
    assert first_node in workers  # sal's tier is placed on workers: the manager is never drained here
    hub.stop_server("sal")
    set_availability(cluster, first_node, "drain")
    try:
        hub.start_server("sal")
        assert cluster.task(name)["NodeID"] != first_node
        assert cluster.task(f"{hub.prefix}-sal_db")["NodeID"] != first_node
        assert cluster.exec_in_service(name, "cat ~/essay.txt") == (0, "my essay\n")
        assert run_sql(cluster, name, "SELECT body FROM notes") == (0, "[('kept in postgres',)]\n")
        hub.stop_server("sal")
    finally:
        set_availability(cluster, first_node, "active")
