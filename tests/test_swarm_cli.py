"""``multiuser-spawner ls|gc|doctor`` on a real swarm, with a real hub whose spawner is the Swarm spawner (the hub
and fixtures of ``test_swarm.py``): the console script reads the hub's config file, sees its ``spawner_class`` and
talks to the manager (the host's engine) about services, overlays and each node's volumes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import docker
import pytest
from swarmstack import docker_cli, remove_swarm_objects
from test_swarm import swarm_hubs  # noqa: F401 (a fixture)

from hubstack import SINGLEUSER_IMAGE, HubStack
from multiuser_spawner import names
from multiuser_spawner.swarm import LABEL_NODE, LABEL_NODE_NAME

pytestmark = pytest.mark.docker

CLI = str(Path(sys.executable).with_name("multiuser-spawner"))
DOCTOR_RUN_LABEL = "org.multiuser-spawner.doctor-run"


@pytest.fixture(scope="module")
def hub(swarm_hubs) -> HubStack:  # noqa: F811 (the fixture imported above)
    return swarm_hubs.make({"ada": [], "bob": []})


def run_cli(hub: HubStack, command: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The console script against the hub's own config file (which names the Swarm spawner) and its API."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    env["JUPYTERHUB_API_TOKEN"] = hub.token
    env["JUPYTERHUB_URL"] = hub.url
    argv = [CLI, command, "-f", str(hub.workdir / "jupyterhub_config.py"), *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)


def owner(prefix: str, user: str) -> names.Owner:
    """A user of the hub ``prefix`` the hub does not have, with a made-up id of their own."""
    return names.Owner(hub=prefix, user=user, user_id=str(zlib.crc32(user.encode()) + 1000))


def make_orphan(client: docker.DockerClient, prefix: str, hub_prefix: str, user: str) -> tuple[str, str]:
    """What a crashed hub leaves on a swarm: a user's overlay and a running service on it, labelled as the Swarm
    spawner labels them, with no server behind them in the hub."""
    who = owner(hub_prefix, user)
    network = f"{prefix}-{user}_net"
    service = f"{prefix}-{user}"
    client.api.create_network(network, driver="overlay", attachable=True, labels=who.labels(names.ROLE_NETWORK))
    client.api.create_service(
        {
            "ContainerSpec": {"Image": SINGLEUSER_IMAGE, "Command": ["sleep", "600"]},
            "RestartPolicy": {"Condition": "none"},
            "Networks": [{"Target": network}],
        },
        name=service,
        labels=who.labels(names.ROLE_NOTEBOOK),
    )
    return service, network


def services_named(client: docker.DockerClient, name: str) -> list:
    return [s for s in client.api.services() if s["Spec"]["Name"] == name]


def networks_named(client: docker.DockerClient, name: str) -> list:
    return [n for n in client.api.networks() if n["Name"] == name]


def tasks_of(client: docker.DockerClient, service_id: str) -> list:
    return [t for t in client.api.tasks() if t["ServiceID"] == service_id]


def doctor_leftovers(client: docker.DockerClient, prefix: str) -> list[str]:
    services = [s["Spec"]["Name"] for s in client.api.services() if s["Spec"]["Name"].startswith(f"{prefix}-doctor")]
    networks = [n["Name"] for n in client.api.networks() if n["Name"].startswith(f"{prefix}-doctor")]
    labelled = [s["Spec"]["Name"] for s in client.api.services(filters={"label": DOCTOR_RUN_LABEL})]
    return services + networks + [s for s in labelled if s.startswith(prefix)]


# -- ls -------------------------------------------------------------------------------------------------------------


def test_ls_lists_a_users_services_with_their_node_and_volumes_per_node(hub, cluster):  # noqa: F811
    hub.start_server("ada")
    notebook = hub.user("ada")["servers"][""]["state"]["object_name"]
    db = f"{hub.prefix}-ada_db"
    node_of = {name: cluster.hostname(cluster.task(name)["NodeID"]) for name in (notebook, db)}

    listed = run_cli(hub, "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    (ada,) = [u for u in json.loads(listed.stdout)["users"] if u["name"] == "ada"]
    items = [item for server in ada["servers"] for item in server.get("services", [])]
    assert {(s["name"], s["node"], s["state"]) for s in items} == {
        (notebook, node_of[notebook], "running"),
        (db, node_of[db], "running"),
    }
    volumes = {v["name"]: v["node"] for server in ada["servers"] for v in server["volumes"]}
    # each volume is on the node its service's first task made it on, as the manager's record says
    assert volumes == {f"{hub.prefix}-ada_home": node_of[notebook], f"{hub.prefix}-ada_db": node_of[db]}
    for name, node in volumes.items():
        found = cluster.engine_run(cluster.api.inspect_node(node)["ID"], ["volume", "inspect", name])
        assert found.returncode == 0, f"{name} is not on {node}: {found.stderr}"

    table = run_cli(hub, "ls")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["USER", "SERVER", "KIND", "ROLE", "NAME", "NODE", "STATE", "SIZE"]
    assert ["ada", "-", "service", "notebook", notebook, node_of[notebook], "running"] in [
        line.split() for line in lines
    ]


# -- gc -------------------------------------------------------------------------------------------------------------


def test_gc_removes_an_orphan_service_and_overlay_of_ours_never_another_hubs(hub, cluster, docker_client):  # noqa: F811
    hub.start_server("ada")
    running = hub.user("ada")["servers"][""]["state"]["object_name"]
    # another hub on the same swarm, whose prefix starts with ours
    other_prefix = f"{hub.prefix}-other"
    ours = make_orphan(docker_client, hub.prefix, hub.prefix, "zed")
    theirs = make_orphan(docker_client, other_prefix, other_prefix, "zed")
    try:
        service_id = services_named(docker_client, ours[0])[0]["ID"]
        dry = run_cli(hub, "gc")
        assert dry.returncode == 0, dry.stderr
        assert ours[0] in dry.stdout and ours[1] in dry.stdout, dry.stdout
        assert other_prefix not in dry.stdout and running not in dry.stdout, dry.stdout
        assert services_named(docker_client, ours[0]), "a dry run removed something"

        done = run_cli(hub, "gc", "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"removed service {ours[0]}" in done.stdout and f"removed network {ours[1]}" in done.stdout
        assert services_named(docker_client, ours[0]) == [] and tasks_of(docker_client, service_id) == []
        assert networks_named(docker_client, ours[1]) == []
        # the other hub's objects and our running server are untouched
        assert services_named(docker_client, theirs[0]) and networks_named(docker_client, theirs[1])
        assert cluster.task(running)["Status"]["State"] == "running"
    finally:
        remove_swarm_objects(cluster, other_prefix)
        remove_swarm_objects(cluster, f"{hub.prefix}-zed")


def test_gc_removes_a_deleted_users_volume_on_its_worker_only_when_asked(hub, cluster, workers, swarm):  # noqa: F811
    hub.start_server("ada")
    worker = cluster.hostname(workers[0])
    volume = f"{hub.prefix}-gone_home"
    labels = owner(hub.prefix, "gone").labels(names.ROLE_HOME)
    # as the Swarm spawner leaves it: the volume on the node its task ran on, its record on the manager
    label_args = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
    assert swarm.node_docker(worker, "volume", "create", *label_args, volume).returncode == 0
    docker_client = cluster.client
    pin = {LABEL_NODE: workers[0], LABEL_NODE_NAME: worker}
    docker_client.api.create_config(volume, b'{"volume": "x"}', labels={**labels, **pin})

    def on_worker() -> bool:
        return swarm.node_docker(worker, "volume", "inspect", volume).returncode == 0

    try:
        dry = run_cli(hub, "gc", "--volumes-of-deleted-users")
        assert volume in dry.stdout and worker in dry.stdout, dry.stdout

        plain = run_cli(hub, "gc", "--yes")  # without the opt-in flag, volumes stay
        assert plain.returncode == 0, plain.stderr
        assert [c for c in docker_client.api.configs() if c["Spec"]["Name"] == volume] and on_worker()

        done = run_cli(hub, "gc", "--yes", "--volumes-of-deleted-users")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"removed volume {volume} on node {worker}" in done.stdout, done.stdout
        assert not on_worker()
        assert [c for c in docker_client.api.configs() if c["Spec"]["Name"] == volume] == []
        # the hub's own users keep their volumes
        assert [c for c in docker_client.api.configs() if c["Spec"]["Name"] == f"{hub.prefix}-ada_home"]
    finally:
        for config in docker_client.api.configs():
            if config["Spec"]["Name"] == volume:
                docker_client.api.remove_config(config["ID"])
        swarm.node_docker(worker, "volume", "rm", "-f", volume)


# -- doctor ---------------------------------------------------------------------------------------------------------


def doctor_lines(result: subprocess.CompletedProcess) -> dict[str, str]:
    """Check name -> its line of doctor's table."""
    found = {}
    for line in result.stdout.splitlines():
        status, _, rest = line.partition(" ")
        for check in ("swarm manager", "nodes", "image", "overlay between nodes", "hub reachable"):
            if rest.strip().startswith(check + " ") and check not in found:
                found[check] = line
    return found


def test_doctor_passes_on_the_healthy_swarm_and_leaves_nothing(hub, cluster, workers, docker_client):  # noqa: F811
    result = run_cli(hub, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = doctor_lines(result)
    assert lines["nodes"].startswith("ok") and cluster.hostname(workers[0]) in lines["nodes"]
    assert lines["image"].startswith("ok") and "on all" in lines["image"], result.stdout
    assert "image of service db" in result.stdout
    assert lines["overlay between nodes"].startswith("ok"), result.stdout
    assert lines["hub reachable"].startswith("ok") and "HTTP 200" in lines["hub reachable"], result.stdout
    assert doctor_leftovers(docker_client, hub.prefix) == []


def test_doctor_fails_naming_the_worker_that_lacks_an_image(hub, cluster, workers, swarm, docker_client):  # noqa: F811
    has_it, lacks_it = cluster.hostname(workers[0]), cluster.hostname(workers[1])
    image = f"{hub.prefix}-probe-only-here:1"
    assert docker_cli("tag", SINGLEUSER_IMAGE, image).returncode == 0
    try:
        assert swarm.node_docker(has_it, "tag", SINGLEUSER_IMAGE, image).returncode == 0
        result = run_cli(hub, "doctor", "--service-image", f"extra={image}")
        assert result.returncode == 1, result.stdout + result.stderr
        (line,) = [line for line in result.stdout.splitlines() if "image of service extra" in line]
        assert line.startswith("FAIL"), line
        assert f"{image} is missing on node(s) {lacks_it}: every server placed there fails to start" in line
        assert has_it not in line.split("missing on node(s)")[1].split(":")[0]
        assert "docker load" in line
        # the other checks still ran, and everything the doctor made is gone
        assert doctor_lines(result)["overlay between nodes"].startswith("ok"), result.stdout
        assert doctor_leftovers(docker_client, hub.prefix) == []
    finally:
        swarm.node_docker(has_it, "rmi", image)
        docker_cli("rmi", image)


def test_doctor_says_when_a_server_on_another_node_cannot_reach_the_hub(hub, docker_client):
    # the hub's container by name, at a port nothing listens on: what a hub bound to 127.0.0.1 looks like from afar
    holder = f"{hub.prefix}-hub"
    url = f"http://{holder}:9/hub/api"
    result = run_cli(hub, "doctor", "--hub-connect-url", url)
    assert result.returncode == 1, result.stdout + result.stderr
    line = doctor_lines(result)["hub reachable"]
    assert line.startswith("FAIL"), result.stdout
    assert f"{url} did not answer a task on node" in line and "c.JupyterHub.hub_ip" in line, line
    assert doctor_leftovers(docker_client, hub.prefix) == []
    # the hub's container is off the doctor's overlay again
    attached = docker_client.containers.get(holder).attrs["NetworkSettings"]["Networks"]
    assert not [name for name in attached if name.startswith(f"{hub.prefix}-doctor")]
