"""One-shot tasks on a chosen node of a swarm.

A manager sees services, tasks and nodes, but not a node's own volumes: those live in that node's engine. What the
hub must do there (remove a deleted user's volumes) it does with a short Swarm task pinned to the node, which talks
to that node's engine through its socket and is removed once it has ended.

The job itself (:class:`.swarm.Job`, its spec and :func:`.swarm.run_job`) is in :mod:`.swarm`, which makes shared
storage's directories with one too; here are the jobs that need a node's engine, and their scripts.
"""

from __future__ import annotations

import hashlib
import json

from . import names
from .docker_gateway import DockerGatewayError
from .swarm import Job, Placement, SwarmGateway, job_service_spec, run_job

#: where a node's engine listens, as seen from a task on that node
NODE_DOCKER_SOCKET = "/var/run/docker.sock"
#: a job's way to its node's engine; a bind mount is right here, unlike for users' files: the path names the same
#: thing on every node
DOCKER_SOCKET_MOUNT = {"Type": "bind", "Source": NODE_DOCKER_SOCKET, "Target": NODE_DOCKER_SOCKET}

#: seconds a node may take to remove a volume (its job's image is already there)
VOLUME_REMOVAL_TIMEOUT = 120

__all__ = ["Job", "job_service_spec", "oom_check_job", "remove_volume_on_node", "run_job", "volume_removal_job"]


# -- removing a volume on its node ----------------------------------------------------------------------------------

#: exit code of the removal when the volume's labels are not the ones expected: it stays (the script says 3 too)
NOT_OURS = 3

# The jobs' scripts use Python's standard library only, so any image with python3 serves (the notebook's does).
# Each talks to its node's engine through the socket named by its last argument.
ENGINE_CLIENT = """
import http.client, json, socket, sys, time
from urllib.parse import quote

class Engine(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(sys.argv[-1])

def call(method, path):
    engine = Engine("localhost", timeout=60)
    engine.request(method, path)
    response = engine.getresponse()
    return response.status, response.read().decode("utf-8", "replace")
"""

# The volume is removed only if every expected label matches: the node's volume of that name may be another hub's,
# or a newer user's.
REMOVE_VOLUME_SCRIPT = (
    ENGINE_CLIENT
    + """
name, expected = sys.argv[1], json.loads(sys.argv[2])
status, body = call("GET", "/volumes/" + quote(name))
if status == 404:
    print("volume " + name + " is not on this node")
    sys.exit(0)
if status != 200:
    print("inspecting volume " + name + " failed: " + body.strip())
    sys.exit(1)
labels = json.loads(body).get("Labels") or {}
wrong = sorted(k for k, v in expected.items() if labels.get(k) != v)
if wrong:
    print("volume " + name + " stays: its labels " + ", ".join(wrong) + " are not this user's")
    sys.exit(3)  # NOT_OURS
# the containers of the user's tasks, just removed from the swarm, leave their node a moment later
deadline = time.monotonic() + 60
status, body = call("DELETE", "/volumes/" + quote(name))
while status == 409 and time.monotonic() < deadline:
    time.sleep(0.5)
    status, body = call("DELETE", "/volumes/" + quote(name))
if status not in (204, 404):
    print("removing volume " + name + " failed: " + body.strip())
    sys.exit(1)
print("removed volume " + name)
"""
)

#: exit codes of the memory-limit check: killed by it, or not (anything else: the check could not tell)
OOM_KILLED, NOT_OOM_KILLED = 0, 1

OOM_CHECK_SCRIPT = (
    ENGINE_CLIENT
    + """
status, body = call("GET", "/containers/" + quote(sys.argv[1]) + "/json")
if status != 200:
    print("inspecting container " + sys.argv[1] + " failed: " + body.strip())
    sys.exit(2)
sys.exit(0 if json.loads(body)["State"].get("OOMKilled") else 1)
"""
)


def _job_name(hub: str, what: str, about: str) -> str:
    # a Swarm name (no '.'), the same for the same object, so a job left behind is found and replaced
    return names.fit_name(f"{hub}-{what}-{hashlib.sha256(about.encode()).hexdigest()[:16]}")


def oom_check_job(container_id: str, node_id: str, image: str, owner: names.Owner) -> Job:
    """The job that tells whether a task's container on its node was killed by its memory limit: a task's status
    on the manager says only "exit code 137", which a plain kill gives too."""
    return Job(
        name=_job_name(owner.hub, "oom", container_id),
        image=image,
        command=("python3", "-c", OOM_CHECK_SCRIPT, container_id, NODE_DOCKER_SOCKET),
        labels=owner.labels(names.ROLE_JOB),
        placement=Placement(pinned_node=node_id),
        mounts=(DOCKER_SOCKET_MOUNT,),
    )


def volume_removal_job(volume: str, node_id: str, image: str, owner: names.Owner) -> Job:
    """The job that removes ``volume`` from its node if it is the owner's: by hub and user identity, or (for a
    user whose identity is unknown) by hub and user name."""
    expected = {names.LABEL_MANAGED: "true", names.LABEL_HUB: owner.hub}
    if owner.identity.known:
        expected |= {names.LABEL_USER_ID: owner.user_id, names.LABEL_USER_CREATED: owner.user_created}
    else:
        expected[names.LABEL_USER] = owner.user
    expected = {k: v for k, v in expected.items() if v}
    return Job(
        name=_job_name(owner.hub, "rm", volume),
        image=image,
        command=(
            "python3",
            "-c",
            REMOVE_VOLUME_SCRIPT,
            volume,
            json.dumps(expected, sort_keys=True),
            NODE_DOCKER_SOCKET,
        ),
        labels=owner.labels(names.ROLE_JOB),
        placement=Placement(pinned_node=node_id),
        mounts=(DOCKER_SOCKET_MOUNT,),
    )


async def remove_volume_on_node(
    gateway: SwarmGateway, volume: str, node_id: str, image: str, owner: names.Owner
) -> None:
    """Remove ``volume`` on its node with :func:`volume_removal_job`; raise, with what the node said, when it
    stays (not the owner's, or the removal failed)."""
    job = volume_removal_job(volume, node_id, image, owner)
    exit_code, output = await run_job(gateway, job, VOLUME_REMOVAL_TIMEOUT)
    if exit_code != 0:
        raise DockerGatewayError(output.strip() or f"the removal on the node exited {exit_code}")
