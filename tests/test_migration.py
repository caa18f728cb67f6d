"""Moving a hub from DockerSpawner to MultiUserSpawner: the admin changes ``spawner_class`` and keeps the rest of
the config, and every user finds their files.

The real-stack test runs one hub (one database) first with stock ``dockerspawner.DockerSpawner``, then with
``spawner_class = "multiuser"``; the unit tests pin the rules that decide which volume is the home.
"""

from __future__ import annotations

import textwrap
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from conftest import new_prefix
from traitlets.config import Config

from hubstack import SINGLEUSER_IMAGE, HubStack, cleanup_prefix, exec_in, spawn_failure_message
from multiuser_spawner import MultiUserSpawner, names
from multiuser_spawner.spawner import entry_on_path, same_path, uses_server_field

# -- which volume is the home (pure rules and the spawner's names) ----------------------------------------------


def spawner_for(username: str, **settings) -> MultiUserSpawner:
    config = Config()
    for key, value in settings.items():
        section, name = key.split("__")
        config[section][name] = value
    return MultiUserSpawner(config=config, user=SimpleNamespace(name=username))


@pytest.mark.parametrize(
    ("username", "volume"),
    [
        ("alice", "jupyterhub-user-alice"),
        ("anna.b", "jupyterhub-user-anna-2eb"),  # DockerSpawner's escaping, not our slug
        ("a--b", "jupyterhub-user-a-2d-2db"),
        ("zoé", "jupyterhub-user-zo-c3-a9"),
    ],
)
def test_a_volumes_entry_on_the_home_path_is_the_home_volume_by_dockerspawners_name(username, volume):
    spawner = spawner_for(username, DockerSpawner__volumes={"jupyterhub-user-{username}": "/home/jovyan/"})
    assert spawner._names_for([]).home_volume == volume
    assert spawner.format_volume_name("jupyterhub-user-{username}", spawner) == volume


def test_a_volumes_entry_elsewhere_leaves_our_home_volume():
    # jupyterhub-deploy-docker's config mounts the volume on notebook_dir, inside the home: it stays a plain mount
    spawner = spawner_for("anna.b", DockerSpawner__volumes={"jupyterhub-user-{username}": "/home/jovyan/work"})
    assert spawner._names_for([]).home_volume == "jupyter-anna-b--0e200715_home"


def test_the_home_path_is_our_setting_and_a_dict_bind_counts():
    spawner = spawner_for(
        "bo",
        DockerSpawner__volumes={"data-{username}": {"bind": "/data", "mode": "rw"}, "other": "/home/jovyan"},
        MultiUserSpawner__home_mount_path="/data",
    )
    assert spawner._names_for([]).home_volume == "data-bo"


def test_a_host_directory_on_the_home_path_is_the_home_without_a_volume_of_ours():
    spawner = spawner_for("bo", DockerSpawner__volumes={"/srv/homes/{username}": "/home/jovyan"})
    assert spawner._names_for([]).home_volume == ""


def test_with_the_home_volume_turned_off_a_volumes_entry_is_a_plain_mount():
    spawner = spawner_for(
        "bo",
        DockerSpawner__volumes={"jupyterhub-user-{username}": "/home/jovyan"},
        MultiUserSpawner__home_volume_name_template="",
    )
    assert spawner._names_for([]).home_volume == ""


def test_a_home_volume_named_twice_is_refused_naming_both_settings():
    spawner = spawner_for(
        "bo",
        DockerSpawner__volumes={"jupyterhub-user-{username}": "/home/jovyan"},
        MultiUserSpawner__home_volume_name_template="{prefix}-{user}{server_suffix}_home",
    )
    with pytest.raises(ValueError, match=r"DockerSpawner\.volumes.*home_volume_name_template"):
        spawner.check_settings()


def test_a_read_only_mount_on_the_home_path_is_refused():
    spawner = spawner_for("bo", DockerSpawner__read_only_volumes={"course-material": "/home/jovyan"})
    with pytest.raises(ValueError, match=r"read_only_volumes.*must be writable"):
        spawner.check_settings()


def test_entry_on_path_and_same_path():
    volumes = {"a": "/x/y/", "b": {"bind": "/home/{username}"}}
    assert same_path("/home/jovyan/", "/home/jovyan") and not same_path("/home/jovyan/work", "/home/jovyan")
    assert entry_on_path(volumes, "/x/y", str) == ("a", "a")
    assert entry_on_path(volumes, "/home/bo", lambda t: t.format(username="bo")) == ("b", "b")
    assert entry_on_path(volumes, "/home/jovyan", str) is None


@pytest.mark.parametrize(
    ("template", "per_server"),
    [("{prefix}-{user}_home", False), ("{prefix}-{user}{server_suffix}_home", True), ("v-{username}", False)]
    + [("v-{username}-{servername}", True), ("v-{raw_servername}", True), ("server-{username}", False)],
)
def test_uses_server_field(template, per_server):
    assert uses_server_field(template) is per_server


# -- the real stack: DockerSpawner first, then the same hub with spawner_class = "multiuser" -----------------------

HOME = "/home/jovyan"
# Users whose names DockerSpawner escapes ("." and "-" become "-2e" and "-2d"), one it keeps, and one who first logs
# in after the switch.
OLD_USERS = ("anna.b", "a--b", "carla")
NEW_USER = "newbie"


def dockerspawner_config(prefix: str, spawner_class: str) -> str:
    """The DockerSpawner config of the docs (a home volume per user by DockerSpawner's ``volumes``), kept as it is
    across the switch; only ``spawner_class`` changes."""
    return textwrap.dedent(
        f"""
        c.JupyterHub.spawner_class = {spawner_class!r}
        c.DockerSpawner.image = {SINGLEUSER_IMAGE!r}
        c.DockerSpawner.prefix = {prefix!r}
        c.DockerSpawner.volumes = {{"{prefix}-jupyterhub-user-{{username}}": "{HOME}"}}
        """
    )


def essay(user: str) -> str:
    return f"the essay of {user}, written under DockerSpawner"


@pytest.fixture(scope="module")
def hub(docker_client, tmp_path_factory):
    prefix = new_prefix()
    users = {user: [] for user in (*OLD_USERS, NEW_USER)}
    stack = HubStack(
        workdir=tmp_path_factory.mktemp("hub"),
        prefix=prefix,
        users=users,
        extra_config=dockerspawner_config(prefix, "dockerspawner.DockerSpawner"),
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        cleanup_prefix(docker_client, prefix)


def dockerspawner_volume(hub: HubStack, user: str) -> str:
    escaped = MultiUserSpawner._escape(user)  # DockerSpawner's own escaping
    return f"{hub.prefix}-jupyterhub-user-{escaped}"


def server_container(docker_client, hub: HubStack, user: str):
    return docker_client.containers.get(hub.user(user)["servers"][""]["state"]["object_name"])


def for_each(users, action) -> None:
    """Run ``action(user)`` for every user side by side, as a class would log in; raise the first failure."""
    with ThreadPoolExecutor(len(users)) as pool:
        list(pool.map(action, users))


@pytest.mark.docker
def test_files_written_under_dockerspawner_are_found_after_the_switch(hub, docker_client):
    # -- under stock DockerSpawner: each user writes a file into their home
    def write_under_dockerspawner(user: str) -> None:
        hub.start_server(user)
        container = server_container(docker_client, hub, user)
        assert container.labels.get(names.LABEL_MANAGED) is None  # really DockerSpawner's own container
        code, out = exec_in(container, f"mkdir -p {HOME}/course && echo '{essay(user)}' > {HOME}/course/essay.txt")
        assert code == 0, out

    for_each(OLD_USERS, write_under_dockerspawner)
    for_each(OLD_USERS, hub.stop_server)
    volumes = {user: docker_client.volumes.get(dockerspawner_volume(hub, user)) for user in OLD_USERS}
    assert all(not volume.attrs.get("Labels") for volume in volumes.values())

    # -- the switch: same hub, same database, same DockerSpawner config; only spawner_class changes
    hub.extra_config = (
        dockerspawner_config(hub.prefix, "multiuser") + "c.MultiUserSpawner.remove_volumes_on_delete = True\n"
    )
    hub.restart()

    # DockerSpawner kept its stopped containers (its remove=False); one under the name ours takes is refused with a
    # sentence naming it, never removed: the admin removes them, as docs/from-dockerspawner.md says
    message = spawn_failure_message(hub, "carla")
    assert f"{hub.prefix}-carla" in message and "did not create" in message, message
    hub.stop_server("carla")
    for user in OLD_USERS:
        docker_client.containers.get(f"{hub.prefix}-{MultiUserSpawner._escape(user)}").remove()

    def find_under_multiuser(user: str) -> None:
        hub.start_server(user)
        container = server_container(docker_client, hub, user)
        assert container.labels.get(names.LABEL_MANAGED) == "true"
        code, out = exec_in(container, f"cat {HOME}/course/essay.txt && echo more >> {HOME}/course/essay.txt")
        assert (code, out) == (0, essay(user) + "\n"), out
        homes = [m["Name"] for m in container.attrs["Mounts"] if m.get("Destination") == HOME]
        assert homes == [dockerspawner_volume(hub, user)]

    # and a user who first logs in now gets a volume by the same template, ours, writable by the image's user
    def start_anew(user: str) -> None:
        hub.start_server(user)
        code, out = exec_in(server_container(docker_client, hub, user), f"touch {HOME}/mine && stat -c %u {HOME}")
        assert (code, out.strip()) == (0, "1000"), out

    for_each([*OLD_USERS, NEW_USER], lambda user: start_anew(user) if user == NEW_USER else find_under_multiuser(user))
    new_volume = docker_client.volumes.get(dockerspawner_volume(hub, NEW_USER))
    assert new_volume.attrs["Labels"][names.LABEL_USER] == NEW_USER
    assert new_volume.attrs["Labels"][names.LABEL_ROLE] == names.ROLE_HOME
    for_each([*OLD_USERS, NEW_USER], hub.stop_server)

    # DockerSpawner's volumes are not ours: deleting their user (even with remove_volumes_on_delete) keeps them
    assert hub.request("DELETE", "/users/a--b").status_code == 204
    volume = docker_client.volumes.get(dockerspawner_volume(hub, "a--b"))
    assert not volume.attrs.get("Labels")
