"""The hub launcher's pure parts, against literal mount tables and ``docker inspect`` output: how it finds its own
container, and the container it makes for the hub from it. tests/test_stack.py runs it for real."""

from __future__ import annotations

import docker
import pytest
from docker.types import Mount

from multiuser_spawner.hub_launcher import (
    LABEL_LAUNCHER,
    STACK_LABEL,
    HubSettings,
    container_id_from_mountinfo,
    hub_container_config,
    own_container_id,
    remove_previous_hub,
)

LAUNCHER_ID = "29e94a684fe31f5fda2208ab61d22442cf6da59afcbd2e9d3360b001837c48f0"
# a container's table as Docker 20.10 on ext4 writes it (the lines around /etc/hostname, as read in a container)
IN_A_CONTAINER = f"""\
76 55 0:52 / / rw,relatime master:28 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X,upperdir=/u,workdir=/w
93 76 254:0 /var/lib/docker/containers/{LAUNCHER_ID}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda rw
94 76 254:0 /var/lib/docker/containers/{LAUNCHER_ID}/hostname /etc/hostname rw,relatime - ext4 /dev/vda rw
95 76 254:0 /var/lib/docker/containers/{LAUNCHER_ID}/hosts /etc/hosts rw,relatime - ext4 /dev/vda rw
96 76 0:5 /docker.sock /var/run/docker.sock rw,nosuid - tmpfs tmpfs rw
"""
ON_A_HOST = """\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
"""
# the parts of `docker inspect` of a launcher's task container that the launcher reads
LAUNCHER = {
    "Id": LAUNCHER_ID,
    "Image": "sha256:4f5e" + "0" * 60,
    "Config": {
        "Env": ["MUS_SPAWNER=multiuser-swarm", "HUB_CONTAINER_NAME=jupyterhub", "PATH=/opt/venv/bin:/usr/bin"],
        "Labels": {STACK_LABEL: "jupyterhub", "com.docker.swarm.task.id": "x7q"},
    },
    "Mounts": [
        {"Type": "bind", "Source": "/var/run/docker.sock", "Destination": "/var/run/docker.sock", "RW": True},
        {"Type": "volume", "Name": "jupyterhub_hub-data", "Source": "/var/lib/docker/volumes/jupyterhub_hub-data/_data",
         "Destination": "/srv/jupyterhub/data", "RW": True},
        {"Type": "bind", "Source": "/srv/deploy/jupyterhub_config.py",
         "Destination": "/srv/jupyterhub/jupyterhub_config.py", "RW": False},
    ],
}  # fmt: skip


def test_the_launcher_finds_its_container_by_the_mount_docker_gives_every_container_its_hostname_file():
    assert container_id_from_mountinfo(IN_A_CONTAINER) == LAUNCHER_ID
    # an engine with its data elsewhere (dockerd --data-root) mounts the file from there
    assert container_id_from_mountinfo(IN_A_CONTAINER.replace("/var/lib/docker/", "/srv/docker-data/")) == LAUNCHER_ID


def test_outside_a_container_there_is_no_container_to_find():
    assert container_id_from_mountinfo(ON_A_HOST) == ""
    # another container's hostname file mounted elsewhere is not this process's own
    other = f"97 76 254:0 /var/lib/docker/containers/{LAUNCHER_ID}/hostname /mnt/hostname rw - ext4 /dev/vda rw\n"
    assert container_id_from_mountinfo(ON_A_HOST + other) == ""


def test_own_container_id_reads_the_processs_mount_table(tmp_path):
    table = tmp_path / "mountinfo"
    table.write_text(IN_A_CONTAINER)
    assert own_container_id(str(table)) == LAUNCHER_ID
    assert own_container_id(str(tmp_path / "missing")) == ""


def test_the_hub_gets_the_launchers_image_environment_and_mounts_with_its_own_name_port_and_labels():
    settings = HubSettings(name="hub-1", bind_address="0.0.0.0", port=8443, command=("jupyterhub", "-f", "x.py"))
    config = hub_container_config(LAUNCHER, settings)
    assert config["image"] == LAUNCHER["Image"]  # the launcher's exact image, not whatever its tag names now
    assert config["name"] == config["hostname"] == "hub-1"
    assert config["command"] == ["jupyterhub", "-f", "x.py"]
    assert config["environment"] == [
        "MUS_SPAWNER=multiuser-swarm",
        "PATH=/opt/venv/bin:/usr/bin",
        "HUB_CONTAINER_NAME=hub-1",
    ]
    assert config["mounts"] == [
        Mount("/var/run/docker.sock", "/var/run/docker.sock", type="bind"),
        Mount("/srv/jupyterhub/data", "jupyterhub_hub-data", type="volume"),
        Mount("/srv/jupyterhub/jupyterhub_config.py", "/srv/deploy/jupyterhub_config.py", type="bind", read_only=True),
    ]
    assert config["ports"] == {"8000/tcp": ("0.0.0.0", 8443)}
    # the stack's label (docker stack ls, ps) and the launcher that made it; never Swarm's task labels
    assert config["labels"] == {LABEL_LAUNCHER: LAUNCHER_ID, STACK_LABEL: "jupyterhub"}
    assert config["init"] is True


def test_the_settings_come_from_the_environment_and_a_bad_port_names_the_variable():
    assert HubSettings.from_environment({}, []) == HubSettings()
    assert HubSettings().port == 8000 and HubSettings().bind_address == "127.0.0.1"
    given = HubSettings.from_environment({"HUB_CONTAINER_NAME": "hub-2", "HUB_PORT": "9000"}, ["jupyterhub"])
    assert (given.name, given.port, given.command) == ("hub-2", 9000, ("jupyterhub",))
    for port in ("http", "0", "70000"):
        with pytest.raises(ValueError, match="HUB_PORT"):
            HubSettings.from_environment({"HUB_PORT": port}, [])


class Containers:
    def __init__(self, found: dict[str, FoundContainer]) -> None:
        self.found = found

    def get(self, name: str) -> FoundContainer:
        if name not in self.found:
            raise docker.errors.NotFound(name)
        return self.found[name]


class FoundContainer:
    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels
        self.removed = False

    def remove(self, force: bool = False) -> None:
        self.removed = force


class Client:
    def __init__(self, **found: FoundContainer) -> None:
        self.containers = Containers(found)


def test_a_hub_left_by_a_killed_launcher_is_replaced_and_a_stranger_of_that_name_is_left_alone():
    left = FoundContainer({LABEL_LAUNCHER: "an-earlier-launcher"})
    remove_previous_hub(Client(jupyterhub=left), "jupyterhub")
    assert left.removed
    stranger = FoundContainer({"maintainer": "someone else"})
    with pytest.raises(SystemExit, match="HUB_CONTAINER_NAME"):
        remove_previous_hub(Client(jupyterhub=stranger), "jupyterhub")
    assert not stranger.removed
    remove_previous_hub(Client(), "jupyterhub")  # none: nothing to do
