"""Two real hubs on one Docker engine whose prefixes are prefixes of each other (``tXXXX`` and ``tXXXX-staging``),
with users of the same name: neither ever touches the other's containers, networks or volumes.

The names collide on purpose: hub A's user ``staging-alice`` gets the very names hub B gives its user ``alice``
(``tXXXX-staging-alice``, ``tXXXX-staging-alice_home``). Only the hub label tells them apart.
"""

from __future__ import annotations

import json

import pytest
from conftest import new_prefix
from test_cli import exists, run_cli

from hubstack import HubStack, cleanup_prefix, exec_in, spawn_failure_message
from multiuser_spawner import names

pytestmark = pytest.mark.docker

USERS = {"alice": [], "staging-alice": []}
# Deleting a user removes their volumes too: the riskiest setting for a neighbour's files.
CONFIG = "c.MultiUserSpawner.remove_volumes_on_delete = True\n"
NOTE = "/home/jovyan/note.txt"


@pytest.fixture(scope="module")
def hubs(docker_client, tmp_path_factory):
    prefix = new_prefix()
    made = []
    try:
        for hub_prefix in (prefix, f"{prefix}-staging"):
            hub = HubStack(workdir=tmp_path_factory.mktemp("hub"), prefix=hub_prefix, users=USERS, extra_config=CONFIG)
            made.append(hub)
            hub.start()
        yield made
    finally:
        for hub in made:
            hub.stop()
        cleanup_prefix(docker_client, prefix)  # both hubs' objects start with it


def resource_names(hub: HubStack | str, user: str) -> names.ResourceNames:
    prefix = hub if isinstance(hub, str) else hub.prefix
    return names.resource_names(names.NameTemplates(), names.template_fields(prefix, user, ""))


def ensure_user(hub: HubStack, user: str) -> None:
    """The user exists in the hub (an earlier test may have deleted them)."""
    if hub.request("GET", f"/users/{user}").status_code == 404:
        assert hub.request("POST", f"/users/{user}").status_code == 201


def write_note(docker_client, hub: HubStack, user: str, text: str) -> None:
    container = docker_client.containers.get(resource_names(hub, user).container)
    code, output = exec_in(container, f"printf %s '{text}' > {NOTE}")
    assert code == 0, output


def read_note(docker_client, hub: HubStack, user: str) -> str:
    container = docker_client.containers.get(resource_names(hub, user).container)
    code, output = exec_in(container, f"cat {NOTE}")
    assert code == 0, output
    return output


def ls_names(hub: HubStack) -> set[str]:
    result = run_cli(hub, "ls", "--json", "--no-sizes")
    assert result.returncode == 0, result.stderr
    found = set()
    for user in json.loads(result.stdout)["users"]:
        for server in user["servers"]:
            for kind in ("containers", "networks", "volumes"):
                found.update(item["name"] for item in server[kind])
    return found


def test_the_names_really_collide():
    assert resource_names("p", "staging-alice") == resource_names("p-staging", "alice")


def test_deleting_a_user_in_one_hub_leaves_the_other_hubs_namesake_alone(hubs, docker_client):
    a, b = hubs
    b.start_server("alice")
    b.start_server("staging-alice")
    a.start_server("alice")
    write_note(docker_client, b, "alice", "b-alice")
    write_note(docker_client, b, "staging-alice", "b-staging-alice")
    write_note(docker_client, a, "alice", "a-alice")
    b_alice = resource_names(b, "alice")
    a_alice = resource_names(a, "alice")

    a.stop_server("alice")
    deleted = a.request("DELETE", "/users/alice")
    assert deleted.status_code == 204, deleted.text

    # hub A's alice is gone, volumes included (remove_volumes_on_delete)...
    assert not exists(docker_client, "volume", a_alice.home_volume)
    # ...and hub B's alice still runs, on her network, with her files
    assert b.server_api("alice", "api/status").status_code == 200
    assert docker_client.containers.get(b_alice.container).status == "running"
    assert exists(docker_client, "network", b_alice.network)
    assert exists(docker_client, "volume", b_alice.home_volume)
    assert read_note(docker_client, b, "alice") == "b-alice"
    assert read_note(docker_client, b, "staging-alice") == "b-staging-alice"


def test_a_user_whose_names_are_another_hubs_is_refused_not_given_its_objects(hubs, docker_client):
    a, b = hubs
    b.start_server("alice")
    b_alice = resource_names(b, "alice")
    message = spawn_failure_message(a, "staging-alice")
    assert b_alice.home_volume in message and "another hub" in message, message
    # hub B's alice keeps her running server and her files; hub A's user never saw them
    assert b.server_api("alice", "api/status").status_code == 200
    assert read_note(docker_client, b, "alice") == "b-alice"
    assert docker_client.containers.get(b_alice.container).labels[names.LABEL_HUB] == b.prefix


def test_ls_and_gc_of_one_hub_see_only_its_own_objects(hubs, docker_client):
    a, b = hubs
    ensure_user(a, "alice")
    b.start_server("alice")
    b.start_server("staging-alice")
    a.start_server("alice")
    b_objects = ls_names(b)
    a_objects = ls_names(a)
    assert resource_names(b, "alice").container in b_objects
    assert resource_names(a, "alice").container in a_objects
    assert not a_objects & b_objects

    # hub A has no server for "staging-alice" (B's does run): were B's objects A's, they would be orphans here;
    # and a leftover of A's own (a crashed hub's) shows that gc does remove what is A's
    a.stop_server("alice")
    leftover = resource_names(a, "alice").network
    a_owner = names.Owner(hub=a.prefix, user="alice", user_id="999")
    docker_client.networks.create(leftover, labels=a_owner.labels(names.ROLE_NETWORK))
    dry = run_cli(a, "gc", "--volumes-of-deleted-users")
    assert dry.returncode == 0, dry.stderr
    assert not {word for line in dry.stdout.splitlines() for word in line.split()} & b_objects, dry.stdout
    removed = run_cli(a, "gc", "--volumes-of-deleted-users", "--yes")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert f"removed network {leftover}" in removed.stdout
    assert not exists(docker_client, "network", leftover)
    assert ls_names(b) == b_objects
    assert b.server_api("alice", "api/status").status_code == 200
    assert b.server_api("staging-alice", "api/status").status_code == 200
