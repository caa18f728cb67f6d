"""The ``multiuser-spawner`` command on a real hub and Docker engine, run as the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import docker
import pytest

from hubstack import SINGLEUSER_IMAGE, docker0_address, free_port
from multiuser_spawner import names
from multiuser_spawner.cleanup import delete_user_resources
from multiuser_spawner.docker_gateway import DockerGateway

pytestmark = pytest.mark.docker

CLI = str(Path(sys.executable).with_name("multiuser-spawner"))


@pytest.fixture(scope="module")
def hub(make_hub):
    return make_hub({"alice": [], "bob": []})


def run_cli(hub, command: str, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    """Run the console script against ``hub``: its config file gives the prefix and images, its API the state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    env["JUPYTERHUB_API_TOKEN"] = hub.token if token is None else token
    env["JUPYTERHUB_URL"] = hub.url  # the public URL: the CLI adds /hub/api
    config = str(hub.workdir / "jupyterhub_config.py")
    argv = [CLI, command, "-f", config, *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)


def server_names(hub, user: str, server: str = "") -> names.ResourceNames:
    return names.resource_names(names.NameTemplates(), names.template_fields(hub.prefix, user, server))


def owner(hub, user: str, server: str = "") -> names.Owner:
    """A user of ``hub`` with a made-up id of their own (from their name: far above any test hub's ids)."""
    return names.Owner(hub=hub.prefix, user=user, user_id=str(zlib.crc32(user.encode()) + 1000), server=server)


def make_leftovers(docker_client, hub, user: str, server: str = "") -> names.ResourceNames:
    """What a crashed hub could leave behind: a server's network and running container, labelled as the
    spawner labels them, with no server in the hub behind them."""
    resources = server_names(hub, user, server)
    docker_client.networks.create(resources.network, labels=owner(hub, user, server).labels(names.ROLE_NETWORK))
    docker_client.containers.run(
        SINGLEUSER_IMAGE,
        ["sleep", "600"],
        name=resources.container,
        labels=owner(hub, user, server).labels(names.ROLE_NOTEBOOK),
        network=resources.network,
        init=True,  # so a stop takes no grace period
        detach=True,
    )
    return resources


def make_volume(docker_client, hub, name: str, role: str, user: str) -> None:
    docker_client.volumes.create(name, labels=owner(hub, user).labels(role))


def exists(docker_client, kind: str, name: str) -> bool:
    collection = {"container": docker_client.containers, "network": docker_client.networks}.get(kind)
    try:
        (collection or docker_client.volumes).get(name)
    except docker.errors.NotFound:
        return False
    return True


def test_ls_lists_a_running_server_with_its_home_volume(hub):
    hub.start_server("alice")
    result = run_cli(hub, "ls", "--json")
    assert result.returncode == 0, result.stderr
    users = {u["name"]: u for u in json.loads(result.stdout)["users"]}
    (server,) = users["alice"]["servers"]
    assert server["name"] == ""
    (container,) = server["containers"]
    assert (container["name"], container["role"], container["state"]) == (f"{hub.prefix}-alice", "notebook", "running")
    (volume,) = server["volumes"]
    assert (volume["name"], volume["role"]) == (f"{hub.prefix}-alice_home", "home")
    assert isinstance(volume["size"], int) and volume["size"] >= 0

    table = run_cli(hub, "ls")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["USER", "SERVER", "KIND", "ROLE", "NAME", "STATE", "SIZE"]
    notebook_row = next(row for row in rows if f"{hub.prefix}-alice " in row + " ")
    assert notebook_row.split() == ["alice", "-", "container", "notebook", f"{hub.prefix}-alice", "running"]
    # aligned: every column starts where its header does
    assert notebook_row.index(f"{hub.prefix}-alice") == header.index("NAME")


def test_gc_removes_orphans_only_with_yes_and_volumes_only_of_deleted_users(hub, docker_client):
    hub.start_server("alice")
    alice = server_names(hub, "alice")
    bob = make_leftovers(docker_client, hub, "bob")
    make_volume(docker_client, hub, f"{hub.prefix}-bob_home", names.ROLE_HOME, "bob")
    gone_home = f"{hub.prefix}-gone_home"
    make_volume(docker_client, hub, gone_home, names.ROLE_HOME, "gone")
    # another hub on the same engine whose prefix starts with ours, made by a release without hub labels: never
    # this hub's to collect (tests/test_two_hubs.py has two real hubs)
    foreign_network = f"{hub.prefix}-other-bob_net"
    legacy_labels = {names.LABEL_MANAGED: "true", names.LABEL_USER: "bob", names.LABEL_ROLE: names.ROLE_NETWORK}
    docker_client.networks.create(foreign_network, labels=legacy_labels)

    dry = run_cli(hub, "gc")
    assert dry.returncode == 0, dry.stderr
    listed = {line.split()[1] for line in dry.stdout.splitlines()[2:]}
    assert listed == {bob.container, bob.network}
    assert "dry run" in dry.stdout
    assert exists(docker_client, "container", bob.container) and exists(docker_client, "network", bob.network)

    dry_volumes = run_cli(hub, "gc", "--volumes-of-deleted-users")
    assert dry_volumes.returncode == 0, dry_volumes.stderr
    assert {line.split()[1] for line in dry_volumes.stdout.splitlines()[2:]} == {bob.container, bob.network, gone_home}
    assert exists(docker_client, "volume", gone_home)

    removed = run_cli(hub, "gc", "--yes")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert sorted(removed.stdout.splitlines()) == [
        f"removed container {bob.container}",
        f"removed network {bob.network}",
    ]
    assert not exists(docker_client, "container", bob.container)
    assert not exists(docker_client, "network", bob.network)
    assert exists(docker_client, "volume", gone_home)

    removed = run_cli(hub, "gc", "--volumes-of-deleted-users", "--yes")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert removed.stdout.splitlines() == [f"removed volume {gone_home}"]
    assert not exists(docker_client, "volume", gone_home)
    # what is still in use, or still someone's, stays
    for kind, name in [
        ("volume", f"{hub.prefix}-bob_home"),
        ("volume", alice.home_volume),
        ("container", alice.container),
        ("network", foreign_network),
    ]:
        assert exists(docker_client, kind, name), (kind, name)
    assert hub.server_api("alice", "api/status").status_code == 200

    again = run_cli(hub, "gc", "--volumes-of-deleted-users")
    assert again.returncode == 0 and again.stdout.startswith("No orphans"), again.stdout


def test_gc_removes_nothing_when_the_hub_cannot_be_asked(hub, docker_client):
    leftovers = make_leftovers(docker_client, hub, "bob", "lab")
    unreachable = run_cli(hub, "gc", "--yes", "--hub-url", f"http://127.0.0.1:{free_port()}/hub/api")
    assert unreachable.returncode == 2
    assert "cannot reach the hub API" in unreachable.stderr and "nothing was removed" in unreachable.stderr
    refused = run_cli(hub, "gc", "--yes", "--hub-url", hub.api, token="not-a-token")
    assert refused.returncode == 2
    assert "403" in refused.stderr
    assert exists(docker_client, "container", leftovers.container)
    assert exists(docker_client, "network", leftovers.network)
    assert run_cli(hub, "gc", "--yes", "--hub-url", hub.api).returncode == 0
    assert not exists(docker_client, "container", leftovers.container)


async def test_delete_user_resources_keeps_volumes_unless_asked(hub, docker_client):
    carol = make_leftovers(docker_client, hub, "carol")
    carol_lab = make_leftovers(docker_client, hub, "carol", "lab")
    make_volume(docker_client, hub, carol.home_volume, names.ROLE_HOME, "carol")
    dave = make_leftovers(docker_client, hub, "dave")
    gateway = DockerGateway.connect({}, concurrency=4, view_max_age=5)
    templates = names.NameTemplates()
    carol_owner = owner(hub, "carol")

    removed = await delete_user_resources(gateway, carol_owner, templates, False, servername="lab")
    assert sorted(removed) == [f"container {carol_lab.container}", f"network {carol_lab.network}"]
    assert exists(docker_client, "container", carol.container)

    removed = await delete_user_resources(gateway, carol_owner, templates, False)
    assert sorted(removed) == [f"container {carol.container}", f"network {carol.network}"]
    assert exists(docker_client, "volume", carol.home_volume)

    removed = await delete_user_resources(gateway, carol_owner, templates, True)
    assert removed == [f"volume {carol.home_volume}"]
    assert not exists(docker_client, "volume", carol.home_volume)
    # another user's objects are untouched
    assert exists(docker_client, "container", dave.container) and exists(docker_client, "network", dave.network)


def test_doctor_passes_on_this_host_and_cleans_up(hub, docker_client):
    url = f"http://{docker0_address()}:{hub.hub_port}/hub/api"
    result = run_cli(hub, "doctor", "--hub-connect-url", url)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["ok", "ok", "skip", "ok", "ok", "ok"], result.stdout
    assert SINGLEUSER_IMAGE in lines[1]
    probes = f"{hub.prefix}-doctor_"
    assert not [c.name for c in docker_client.containers.list(all=True) if c.name.startswith(probes)]
    assert not [n.name for n in docker_client.networks.list() if n.name.startswith(probes)]


def test_doctor_fails_on_a_missing_image(hub):
    result = run_cli(hub, "doctor", "--image", "multiuser-spawner/no-such-image:0", "--service-image", "db=postgres:0")
    assert result.returncode == 1
    assert "multiuser-spawner/no-such-image:0 is not on this Docker host" in result.stdout
    assert "FAIL  image of service db" in result.stdout
