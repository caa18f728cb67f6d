"""The core, on a real Docker engine and a real hub: one image, a home volume per user, USER_ID, limits by group."""

from __future__ import annotations

import threading
import time

import pytest

from hubstack import SINGLEUSER_IMAGE, exec_in, notebook

pytestmark = pytest.mark.docker

TIERS = """
c.MultiUserSpawner.group_overrides = {
    "1-students": {"groups": ["students"], "spawner_override": {
        "cpu_limit": 0.5, "mem_limit": "512M", "cpu_guarantee": 0.25, "mem_guarantee": "256M"}},
    "2-staff": {"groups": ["staff"], "spawner_override": {
        "cpu_limit": 1.0, "mem_limit": "1G", "cpu_guarantee": 0.5, "mem_guarantee": "512M"}},
}
c.MultiUserSpawner.environment = {"GREETING": "hello {raw_username} on {server_suffix}!", "JSON": '{"a": 1}'}
"""

USERS = {"student1": ["students"], "staff1": ["staff"], "a-b": ["students"], "a_b": ["students"]}


@pytest.fixture(scope="module")
def hub(make_hub, docker_client):
    return make_hub(USERS, TIERS)


def container_of(docker_client, hub, user):
    return docker_client.containers.get(hub.user(user)["servers"][""]["state"]["object_name"])


def test_each_user_gets_own_container_and_volume_from_one_image(hub, docker_client):
    for user in ("student1", "staff1"):
        hub.start_server(user)
    a = container_of(docker_client, hub, "student1")
    b = container_of(docker_client, hub, "staff1")
    assert a.id != b.id
    assert a.attrs["Config"]["Image"] == b.attrs["Config"]["Image"] == SINGLEUSER_IMAGE

    def home_volume(container):
        (mount,) = [m for m in container.attrs["Mounts"] if m["Destination"] == "/home/jovyan"]
        assert mount["Type"] == "volume"
        return mount["Name"]

    assert home_volume(a) == f"{hub.prefix}-student1_home"
    assert home_volume(b) == f"{hub.prefix}-staff1_home"
    volume = docker_client.volumes.get(home_volume(a))
    assert volume.attrs["Labels"]["org.multiuser-spawner.user"] == "student1"
    assert volume.attrs["Labels"]["org.multiuser-spawner.role"] == "home"


def test_user_id_and_templated_environment(hub, docker_client):
    hub.start_server("student1")
    container = container_of(docker_client, hub, "student1")
    code, out = exec_in(container, 'printf "%s|%s|%s" "$USER_ID" "$GREETING" "$JSON"')
    assert code == 0
    assert out == 'student1|hello student1 on !|{"a": 1}'


def test_server_answers_through_the_proxy(hub):
    hub.start_server("student1")
    r = hub.server_api("student1", "api/status")
    assert r.status_code == 200, r.text
    assert "started" in r.json()


def test_file_survives_stop_container_removal_and_start(hub, docker_client):
    hub.start_server("staff1")
    first = container_of(docker_client, hub, "staff1")
    code, out = exec_in(first, "echo 'my thesis' > $HOME/thesis.txt && id -u")
    assert code == 0 and out.strip() == "1000", out
    hub.stop_server("staff1")
    # the container is gone (remove is the default), the volume is not
    assert not [c for c in docker_client.containers.list(all=True) if c.name == first.name]
    docker_client.volumes.get(f"{hub.prefix}-staff1_home")
    hub.start_server("staff1")
    second = container_of(docker_client, hub, "staff1")
    assert second.id != first.id
    code, out = exec_in(second, "cat $HOME/thesis.txt")
    assert (code, out) == (0, "my thesis\n")


def test_home_is_writable_by_the_container_user_on_first_spawn(hub, docker_client):
    hub.start_server("a-b")
    container = container_of(docker_client, hub, "a-b")
    code, out = exec_in(container, "touch $HOME/first && stat -c '%u %U' $HOME && whoami")
    assert code == 0, out
    assert out.split() == ["1000", "jovyan", "jovyan"]


def test_similar_usernames_never_share_a_volume(hub, docker_client):
    for user in ("a-b", "a_b"):
        hub.start_server(user)
    volumes = {
        user: [m["Name"] for m in container_of(docker_client, hub, user).attrs["Mounts"]][0] for user in ("a-b", "a_b")
    }
    assert volumes["a-b"] != volumes["a_b"]
    # the write must succeed, or the other user's "not there" below would prove nothing
    assert exec_in(container_of(docker_client, hub, "a-b"), "echo mine > $HOME/owner && cat $HOME/owner") == (
        0,
        "mine\n",
    )
    code, out = exec_in(container_of(docker_client, hub, "a_b"), "test -e $HOME/owner || echo absent")
    assert (code, out) == (0, "absent\n")


CGROUP_MEMORY = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"
CGROUP_CPU = (
    "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us 2>/dev/null"
    " || cat /sys/fs/cgroup/cpu.max"
)


@pytest.mark.parametrize(
    ("user", "memory", "quota", "reservation", "shares"),
    [("student1", 512 * 2**20, 50_000, 256 * 2**20, 256), ("staff1", 2**30, 100_000, 512 * 2**20, 512)],
)
def test_group_tiers_are_enforced_in_the_cgroup(hub, docker_client, user, memory, quota, reservation, shares):
    hub.start_server(user)
    container = container_of(docker_client, hub, user)
    host_config = container.attrs["HostConfig"]
    assert host_config["Memory"] == memory
    assert host_config["CpuQuota"] == quota
    assert host_config["CpuPeriod"] == 100_000
    assert host_config["MemoryReservation"] == reservation
    assert host_config["CpuShares"] == shares
    code, out = exec_in(container, CGROUP_MEMORY)
    assert code == 0 and int(out.split()[0]) == memory
    code, out = exec_in(container, CGROUP_CPU)
    assert code == 0 and out.split()[:2] == [str(quota), "100000"]


def test_memory_limit_kills_a_process_that_exceeds_it(hub, docker_client):
    hub.start_server("student1")
    container = container_of(docker_client, hub, "student1")
    # allocate 700 MB in a child process, above the 512M student limit: the kernel kills it
    code, out = exec_in(container, "python3 -c 'x = bytearray(700 * 2**20); x[::4096] = b\"1\" * len(x[::4096])'")
    assert code == 137, (code, out)
    # the server itself is still fine
    assert hub.server_api("student1", "api/status").status_code == 200


def test_hub_concurrent_spawn_limit_still_applies(make_hub, docker_client):
    hub = make_hub({"one": [], "two": []}, "c.JupyterHub.concurrent_spawn_limit = 1\n")
    first = threading.Thread(target=hub.request, args=("POST", "/users/one/server"), kwargs={"json": {}})
    first.start()
    deadline = time.monotonic() + 30
    while (hub.user("one")["servers"].get("") or {}).get("pending") != "spawn":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    refused = hub.request("POST", "/users/two/server", json={})
    first.join()
    assert refused.status_code == 429, refused.text
    hub.wait_ready("one")
    hub.start_server("two")  # once the first is up, the second may start


def home_helpers_created(docker_client, prefix: str, since: int) -> list[str]:
    """Names of the home-ownership helper containers this hub created since ``since`` (Docker's own event log)."""
    events = docker_client.events(
        since=since, until=int(time.time()) + 1, filters={"type": "container", "event": "create"}, decode=True
    )
    names = [event["Actor"]["Attributes"].get("name", "") for event in events]
    return [name for name in names if name.startswith(f"{prefix}-") and name.endswith("_home-init")]


def test_an_image_that_owns_its_home_needs_one_ownership_check_per_hub(make_hub, docker_client):
    # The image has /home/jovyan owned by jovyan, and Docker copies it (owner included) into a new volume: the
    # first new volume is checked, the rest of a class starting at once and everyone after skip the helper.
    hub = make_hub({"new1": [], "new2": [], "new3": []})
    since = int(time.time()) - 1
    starts = [threading.Thread(target=hub.start_server, args=(user,)) for user in ("new1", "new2")]
    for start in starts:
        start.start()
    for start in starts:
        start.join()
    hub.start_server("new3")
    assert len(home_helpers_created(docker_client, hub.prefix, since)) == 1
    for user in ("new1", "new2", "new3"):
        code, out = exec_in(notebook(docker_client, hub, user), "touch $HOME/mine && stat -c %u $HOME")
        assert (code, out.strip()) == (0, "1000")


def test_a_home_the_image_does_not_have_is_given_to_the_user_every_time(make_hub, docker_client):
    # /data is not in the image: Docker makes the mount point root's, so every new volume needs the helper.
    hub = make_hub({"fresh1": [], "fresh2": []}, 'c.MultiUserSpawner.home_mount_path = "/data"\n')
    since = int(time.time()) - 1
    for user in ("fresh1", "fresh2"):
        hub.start_server(user)
        code, out = exec_in(notebook(docker_client, hub, user), "touch /data/mine && stat -c %u /data")
        assert (code, out.strip()) == (0, "1000")
    assert len(home_helpers_created(docker_client, hub.prefix, since)) == 2
