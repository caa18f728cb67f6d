"""A user is known by the hub's user id, not by their name: a user renamed in the hub (PATCH /users/{name}) keeps
their files and ``gc --volumes-of-deleted-users`` keeps them too; a user deleted and another created under the same
name never gets the old user's files."""

from __future__ import annotations

import sqlite3

import pytest
from test_cli import exists, run_cli

from hubstack import SINGLEUSER_IMAGE, exec_in, spawn_failure_message
from multiuser_spawner import names

pytestmark = pytest.mark.docker

NOTE = "/home/jovyan/note.txt"


@pytest.fixture(scope="module")
def hub(make_hub):
    return make_hub({"rosa": []})


def home_of(hub, user: str) -> str:
    return names.resource_names(names.NameTemplates(), names.template_fields(hub.prefix, user, "")).home_volume


def notebook_of(docker_client, hub, user: str):
    (container,) = docker_client.containers.list(
        filters={
            "label": [
                f"{names.LABEL_HUB}={hub.prefix}",
                f"{names.LABEL_USER}={user}",
                "org.multiuser-spawner.role=notebook",
            ]
        }
    )
    return container


def write_note(docker_client, hub, user: str, text: str) -> None:
    code, output = exec_in(notebook_of(docker_client, hub, user), f"printf %s '{text}' > {NOTE}")
    assert code == 0, output


def note_in_volume(docker_client, volume: str) -> str:
    """The note as it is on the volume, read by a throwaway container (no server needed)."""
    reader = docker_client.containers.run(
        SINGLEUSER_IMAGE, ["cat", "/v/note.txt"], volumes={volume: {"bind": "/v", "mode": "ro"}}, detach=True
    )
    try:
        assert reader.wait(timeout=60)["StatusCode"] == 0, reader.logs()
        return reader.logs(stdout=True, stderr=False).decode()
    finally:
        reader.remove(force=True)


def rename(hub, old: str, new: str) -> None:
    r = hub.request("PATCH", f"/users/{old}", json={"name": new})
    assert r.status_code == 200, r.text
    assert hub.user(new)["name"] == new


def test_a_renamed_user_keeps_their_home_and_gc_keeps_it(hub, docker_client):
    hub.start_server("rosa")
    write_note(docker_client, hub, "rosa", "written as rosa")
    hub.stop_server("rosa")
    rename(hub, "rosa", "rosa-maria")

    hub.start_server("rosa-maria")
    code, output = exec_in(notebook_of(docker_client, hub, "rosa-maria"), f"cat {NOTE}")
    assert (code, output) == (0, "written as rosa")
    # the home kept its name: it was found by the user's id, not made anew under the new name
    assert not exists(docker_client, "volume", home_of(hub, "rosa-maria"))
    hub.stop_server("rosa-maria")

    # "rosa" is no user any more, but her id is: gc must not take the volume for a deleted user's
    dry = run_cli(hub, "gc", "--volumes-of-deleted-users")
    assert dry.returncode == 0, dry.stderr
    assert home_of(hub, "rosa") not in dry.stdout, dry.stdout
    removed = run_cli(hub, "gc", "--volumes-of-deleted-users", "--yes")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert note_in_volume(docker_client, home_of(hub, "rosa")) == "written as rosa"


def hub_user_id(hub, user: str) -> int:
    """The user's id in the hub's database (the REST API does not show it)."""
    with sqlite3.connect(hub.workdir / "jupyterhub.sqlite") as db:
        return db.execute("SELECT id FROM users WHERE name = ?", (user,)).fetchone()[0]


def test_a_new_user_of_a_deleted_users_name_never_gets_their_files(hub, docker_client):
    # made now, so the newest user: SQLite then gives the same id to the user made after its deletion
    assert hub.request("POST", "/users/ida").status_code == 201
    first_id = hub_user_id(hub, "ida")
    hub.start_server("ida")
    write_note(docker_client, hub, "ida", "written by the first ida")
    hub.stop_server("ida")
    assert hub.request("DELETE", "/users/ida").status_code == 204  # volumes kept (remove_volumes_on_delete off)
    assert hub.request("POST", "/users/ida").status_code == 201
    assert hub_user_id(hub, "ida") == first_id  # the id alone cannot tell the two idas apart

    message = spawn_failure_message(hub, "ida")
    assert home_of(hub, "ida") in message and "deleted" in message, message
    # nothing was lost either: the first ida's files are still on her volume, for an admin to decide
    assert note_in_volume(docker_client, home_of(hub, "ida")) == "written by the first ida"

    # with the new ida recorded (her failed spawn's state), gc knows the volume is the deleted user's
    dry = run_cli(hub, "gc", "--volumes-of-deleted-users")
    assert dry.returncode == 0, dry.stderr
    assert home_of(hub, "ida") in dry.stdout, dry.stdout
