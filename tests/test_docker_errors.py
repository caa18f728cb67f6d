"""Every Docker failure reaches the admin or the user as a sentence naming the operation, the object and the
engine's own words: on a real engine refusing real requests, on an engine that cannot be reached, and through a
real hub, where a spawn on an engine that is down and a stop that Docker refuses are told in a sentence."""

from __future__ import annotations

import os
import re

import docker
import pytest

from hubstack import SINGLEUSER_IMAGE, spawn_failure_message
from multiuser_spawner.docker_gateway import DockerGateway, DockerGatewayError

pytestmark = pytest.mark.docker


@pytest.fixture
def gateway():
    return DockerGateway.connect({}, concurrency=4, view_max_age=1.0)


@pytest.fixture
def prefix(docker_client):
    value = "t" + os.urandom(4).hex()
    yield value
    for container in docker_client.containers.list(all=True, filters={"name": value}):
        container.remove(force=True)
    for network in docker_client.networks.list(names=[f"{value}-net"]):
        network.remove()
    for volume in docker_client.volumes.list(filters={"name": value}):
        volume.remove(force=True)


def idle_container(docker_client, name: str, **kwargs):
    return docker_client.containers.create(SINGLEUSER_IMAGE, ["sleep", "3600"], entrypoint=[], name=name, **kwargs)


async def test_a_command_in_a_stopped_container_is_refused_with_a_sentence(gateway, docker_client, prefix):
    name = f"{prefix}-stopped"
    idle_container(docker_client, name)
    with pytest.raises(DockerGatewayError) as failure:
        await gateway.exec_run(name, ["pg_isready"])
    assert str(failure.value).startswith(f"running pg_isready in container {name} failed: ")
    assert "is not running" in str(failure.value)  # the engine's own words
    assert failure.value.status_code == 409


async def test_removing_a_volume_in_use_is_refused_with_a_sentence(gateway, docker_client, prefix):
    volume = f"{prefix}-data"
    docker_client.volumes.create(volume)
    idle_container(docker_client, f"{prefix}-user", volumes={volume: {"bind": "/data", "mode": "rw"}})
    with pytest.raises(DockerGatewayError, match=f"^removing volume {volume} failed: .*in use"):
        await gateway.remove_volume(volume)
    assert docker_client.volumes.get(volume)


async def test_starting_a_container_whose_network_was_removed_behind_our_back(gateway, docker_client, prefix):
    network = docker_client.networks.create(f"{prefix}-net")
    name = f"{prefix}-orphan"
    idle_container(docker_client, name, network=network.name)
    network.remove()
    with pytest.raises(DockerGatewayError, match=f"^starting container {name} failed: .*{prefix}-net"):
        await gateway.start_container(name)


async def test_what_is_missing_is_none_not_an_error(gateway, prefix):
    assert await gateway.inspect_container(f"{prefix}-none") is None
    assert await gateway.inspect_volume(f"{prefix}-none") is None
    assert await gateway.inspect_network(f"{prefix}-none") is None
    assert await gateway.stop_container(f"{prefix}-none", 1) is False
    await gateway.remove_container(f"{prefix}-none")
    await gateway.remove_volume(f"{prefix}-none")
    await gateway.remove_network(f"{prefix}-none")


UNREACHABLE_CALLS = {
    "stopping container jupyter-alice": lambda g: g.stop_container("jupyter-alice", 1),
    "inspecting container jupyter-alice": lambda g: g.inspect_container("jupyter-alice"),
    "running id in container jupyter-alice": lambda g: g.exec_run("jupyter-alice", ["id"]),
    "listing containers": lambda g: g.list_containers(["org.multiuser-spawner.managed=true"]),
    "listing volumes": lambda g: g.list_volumes([]),
    "listing networks": lambda g: g.list_networks([]),
    "removing volume jupyter-alice_home": lambda g: g.remove_volume("jupyter-alice_home"),
    "inspecting volume jupyter-alice_home": lambda g: g.ensure_volume("jupyter-alice_home", {}),
    "removing network jupyter-alice_net": lambda g: g.remove_network("jupyter-alice_net"),
}


@pytest.mark.parametrize("operation", UNREACHABLE_CALLS)
async def test_an_engine_that_cannot_be_reached_is_named_in_the_sentence(tmp_path, operation):
    # an engine that is down: nothing listens on its socket
    gateway = DockerGateway.connect(
        {"base_url": f"unix://{tmp_path}/docker.sock", "version": "1.41"}, concurrency=1, view_max_age=1.0
    )
    with pytest.raises(DockerGatewayError) as failure:
        await UNREACHABLE_CALLS[operation](gateway)
    assert str(failure.value).startswith(f"{operation} failed: the Docker engine could not be reached")


def test_a_spawn_on_an_engine_that_cannot_be_reached_says_so(make_hub, tmp_path):
    hub = make_hub(
        {"dora": []},
        f'c.MultiUserSpawner.client_kwargs = {{"base_url": "unix://{tmp_path}/docker.sock", "version": "1.41"}}\n',
    )
    message = spawn_failure_message(hub, "dora")
    # the first request of the spawn names itself (listing volumes, inspecting the image: whichever comes first)
    assert re.match(r"^[a-z]+ [a-z ]+ failed: the Docker engine could not be reached", message), message


def test_a_stop_docker_refuses_is_told_in_a_sentence(make_hub, docker_client):
    hub = make_hub({"stan": []})
    hub.start_server("stan")
    network = f"{hub.prefix}-stan_net"
    # Behind the hub's back, another container joins the server's private network: Docker then refuses to remove it.
    idle_container(docker_client, f"{hub.prefix}-intruder", network=network).start()

    # JupyterHub's own stop answers 204 whatever the spawner says, and drops the error: the hub's log must tell.
    hub.stop_server("stan")

    log = hub.log_tail(40)
    assert f"Could not stop stan's server: removing network {network} failed: " in log, log
    assert "active endpoints" in log
    with pytest.raises(docker.errors.NotFound):  # the notebook itself was stopped and removed
        docker_client.containers.get(f"{hub.prefix}-stan")
    assert docker_client.networks.get(network)  # left for gc, which lists it as an orphan
