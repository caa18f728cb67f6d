"""A new home is never left root's: every failure of the ownership helper is a sentence, and the next start fixes
the volume. On a real Docker engine, with images whose home directory root owns (as many images' do)."""

from __future__ import annotations

import io
import os
import signal
import tarfile
import time

import docker
import pytest

from hubstack import SINGLEUSER_IMAGE, exec_in, notebook
from multiuser_spawner import home, names
from multiuser_spawner.docker_gateway import DockerGateway, DockerGatewayError

pytestmark = pytest.mark.docker

# Many images make the user's home as root and leave it so: Docker then copies a root-owned directory into a new
# volume, and only the helper can give it to the user.
ROOT_HOME_DOCKERFILE = f"""
FROM {SINGLEUSER_IMAGE}
USER root
RUN chown -R 0:0 /home/jovyan
USER jovyan
"""
# The same, with an `id` that hangs once per volume: the first helper on a volume never finishes (as when the
# engine or the hub stalls), the next one works.
HANG_ONCE_ID = """#!/bin/sh
if [ -e /home/jovyan/.hang-once ]; then rm -f /home/jovyan/.hang-once; exec sleep 3600; fi
exec /usr/bin/id "$@"
"""
HANG_ONCE_DOCKERFILE = """
FROM {base}
USER root
COPY id /usr/local/bin/id
RUN chmod 755 /usr/local/bin/id && touch /home/jovyan/.hang-once
USER jovyan
"""


def build_image(client: docker.DockerClient, tag: str, dockerfile: str, files: dict[str, str] | None = None) -> str:
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, text in {"Dockerfile": dockerfile, **(files or {})}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=tag, pull=False, rm=True, forcerm=True)
    return tag


@pytest.fixture(scope="module")
def images(docker_client):
    """Two images of our own, removed at the end: ``root_home`` and ``hang_once``."""
    suffix = os.urandom(4).hex()
    root_home = build_image(docker_client, f"multiuser-spawner-test/root-home:{suffix}", ROOT_HOME_DOCKERFILE)
    hang_once = build_image(
        docker_client,
        f"multiuser-spawner-test/hang-once:{suffix}",
        HANG_ONCE_DOCKERFILE.format(base=root_home),
        {"id": HANG_ONCE_ID},
    )
    yield {"root_home": root_home, "hang_once": hang_once}
    for tag in (hang_once, root_home):
        docker_client.images.remove(tag, force=True)


@pytest.fixture
def prefix(docker_client):
    value = "t" + os.urandom(4).hex()
    yield value
    for container in docker_client.containers.list(all=True, filters={"name": value}):
        container.remove(force=True)
    for volume in docker_client.volumes.list(filters={"name": value}):
        volume.remove(force=True)


@pytest.fixture
def gateway():
    return DockerGateway.connect({}, concurrency=4, view_max_age=1.0)


def owner_of(volume: str, user: str = "alice") -> names.Owner:
    return names.Owner(hub=volume.split("-", 1)[0], user=user, user_id="7")


async def ensure_home(gateway, docker_client, volume: str, image: str, user: str = "jovyan", **kwargs) -> bool:
    """One spawn's home step, with this test's own memory of what was checked (a fresh hub's)."""
    kwargs.setdefault("knowledge", home.CopyOwnershipKnowledge())
    kwargs.setdefault("checked", home.CheckedHomes())
    return await home.ensure_home_volume(
        gateway,
        volume=volume,
        owner=owner_of(volume),
        image=image,
        image_id=docker_client.images.get(image).id,
        image_user=user,
        mount_path="/home/jovyan",
        fix_ownership=True,
        **kwargs,
    )


def write_home(docker_client, volume: str, image: str) -> tuple[int, str]:
    """What the user does first: write a file in ~ (as the image's user, in the image, with the home volume
    mounted as the notebook has it)."""
    container = docker_client.containers.run(
        image,
        ["sh", "-c", "touch ~/mine && stat -c %u ~"],
        entrypoint=[],
        volumes={volume: {"bind": "/home/jovyan", "mode": "rw"}},
        detach=True,
    )
    try:
        code = container.wait(timeout=60)["StatusCode"]
        return code, container.logs().decode().strip()
    finally:
        container.remove(force=True)


def helper_containers(docker_client, volume: str) -> list:
    return docker_client.containers.list(all=True, filters={"name": home.helper_name(volume)})


async def test_a_helper_that_hangs_is_a_spawn_error_and_the_next_start_fixes_the_home(
    gateway, docker_client, images, prefix
):
    volume = f"{prefix}-alice_home"
    checked = home.CheckedHomes()
    with pytest.raises(DockerGatewayError) as failure:
        await ensure_home(gateway, docker_client, volume, images["hang_once"], checked=checked, timeout=3)
    message = str(failure.value)
    assert f"could not give home volume {volume} to user 'jovyan'" in message
    assert f"container {home.helper_name(volume)} did not finish within 3 s" in message
    assert "next start tries again" in message
    # the interrupted step left what a crash leaves: the volume, root's
    assert docker_client.volumes.get(volume)
    assert write_home(docker_client, volume, images["root_home"])[0] != 0
    assert helper_containers(docker_client, volume) == []  # the hung helper is not left running

    assert await ensure_home(gateway, docker_client, volume, images["hang_once"], checked=checked, timeout=30) is False
    assert write_home(docker_client, volume, images["root_home"]) == (0, "1000")


async def test_a_home_an_earlier_start_left_roots_is_fixed_though_the_volume_exists(
    gateway, docker_client, images, prefix
):
    volume = f"{prefix}-alice_home"
    # a start that stopped after making the volume and before the helper (its create failed: no such image)
    with pytest.raises(DockerGatewayError, match=f"creating container {home.helper_name(volume)} failed"):
        await home.ensure_home_volume(
            gateway,
            volume=volume,
            owner=owner_of(volume),
            image="multiuser-spawner-test/no-such-image:none",
            image_id="sha256:none",
            image_user="jovyan",
            mount_path="/home/jovyan",
            fix_ownership=True,
            knowledge=home.CopyOwnershipKnowledge(),
            checked=home.CheckedHomes(),
        )
    assert docker_client.volumes.get(volume)
    # a new hub (nothing remembered) finds the volume there and still gives it to the user
    assert await ensure_home(gateway, docker_client, volume, images["root_home"]) is False
    assert write_home(docker_client, volume, images["root_home"]) == (0, "1000")


async def test_a_helper_that_fails_keeps_the_volume_and_says_why(gateway, docker_client, images, prefix):
    volume = f"{prefix}-alice_home"
    with pytest.raises(DockerGatewayError) as failure:
        await ensure_home(gateway, docker_client, volume, images["root_home"], user="nosuchuser")
    message = str(failure.value)
    assert "exited with code 1" in message and "nosuchuser" in message and "no such user" in message
    assert docker_client.volumes.get(volume)  # kept: an existing volume may hold the user's files
    assert helper_containers(docker_client, volume) == []
    assert await ensure_home(gateway, docker_client, volume, images["root_home"]) is False
    assert write_home(docker_client, volume, images["root_home"]) == (0, "1000")


async def test_a_leftover_helper_of_ours_is_replaced_and_a_strangers_is_refused(gateway, docker_client, images, prefix):
    ours, theirs = f"{prefix}-alice_home", f"{prefix}-bob_home"
    for volume, labels in ((ours, owner_of(ours).labels(names.ROLE_HELPER)), (theirs, {})):
        # what a hub killed while its helper ran leaves behind (or another program's container of that name)
        docker_client.containers.run(
            SINGLEUSER_IMAGE,
            ["sleep", "3600"],
            entrypoint=[],
            name=home.helper_name(volume),
            labels=labels,
            detach=True,
        )

    assert await ensure_home(gateway, docker_client, ours, images["root_home"]) is True
    assert write_home(docker_client, ours, images["root_home"]) == (0, "1000")
    assert helper_containers(docker_client, ours) == []

    with pytest.raises(DockerGatewayError, match="taken by a container multiuser-spawner did not create") as failure:
        await ensure_home(gateway, docker_client, theirs, images["root_home"])
    assert "next start tries again" in str(failure.value)
    (stranger,) = helper_containers(docker_client, theirs)
    assert stranger.status == "running"  # never removed
    stranger.remove(force=True)  # what the admin does; then the next start fixes the volume
    assert await ensure_home(gateway, docker_client, theirs, images["root_home"]) is False
    assert write_home(docker_client, theirs, images["root_home"]) == (0, "1000")


async def test_the_helper_carries_our_labels(gateway, docker_client, images, prefix):
    volume = f"{prefix}-alice_home"
    since = int(time.time()) - 1
    await ensure_home(gateway, docker_client, volume, images["root_home"])
    events = docker_client.events(
        since=since, until=int(time.time()) + 1, filters={"type": "container", "event": "create"}, decode=True
    )
    (created,) = [e for e in events if e["Actor"]["Attributes"].get("name") == home.helper_name(volume)]
    attributes = created["Actor"]["Attributes"]
    assert attributes[names.LABEL_MANAGED] == "true"
    assert attributes[names.LABEL_USER] == "alice"
    assert attributes[names.LABEL_HUB] == prefix
    assert attributes[names.LABEL_ROLE] == names.ROLE_HELPER


def test_a_home_left_roots_by_a_killed_hub_is_fixed_by_the_next_spawn(make_hub, docker_client, images):
    hub = make_hub({"kim": []}, f"c.MultiUserSpawner.image = {images['hang_once']!r}\n")
    assert hub.request("POST", "/users/kim/server", json={}).status_code in (201, 202)
    helper_label = f"{names.LABEL_ROLE}={names.ROLE_HELPER}"
    deadline = time.monotonic() + 60
    while not [
        c
        for c in docker_client.containers.list(filters={"label": helper_label, "status": "running"})
        if c.name.startswith(f"{hub.prefix}-kim")
    ]:
        assert time.monotonic() < deadline, hub.log_tail()
        time.sleep(0.2)
    os.killpg(hub.process.pid, signal.SIGKILL)  # the hub dies while its helper runs
    hub.process.wait(10)
    hub.process = None
    leftover = docker_client.containers.get(f"{hub.prefix}-kim_home-init")
    assert leftover.labels[names.LABEL_MANAGED] == "true"  # gc and ls can see it

    hub.start()
    hub.start_server("kim")
    code, out = exec_in(notebook(docker_client, hub, "kim"), "touch ~/mine && stat -c %u ~")
    assert (code, out.strip()) == (0, "1000"), out
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(leftover.id)
