"""Docker Swarm as a :class:`~.backend.Backend`: each workload a Swarm service of one task, the private network an
attachable overlay, and each volume a node-local volume that its workload's task creates where it lands.

Pure builders first (tested against literal dicts), then :class:`SwarmGateway` (the Swarm calls, run in the
gateway's pool like every other Docker call) and :class:`SwarmEngine`.

What the engine keeps and where:

- **Volume records.** A named volume lives on one node, out of the manager's sight. For each volume the plan asks
  for, a Swarm *config* of the same name keeps the volume's labels (a service's generated password among them) in
  the managers' store, which every manager reads. The first task that mounts the volume adds the node it landed on
  (:data:`LABEL_NODE`); later tasks are constrained to that node (``node.id==...``), so a returning user finds
  their files. With shared volumes (a volume driver, or driver options such as NFS) nothing is pinned.
- **Passwords** reach a service in its spec's environment, as they reach a container on one host: the spec is in
  the managers' store and travels with the task to whichever node runs it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import names
from .container_spec import EXTRA_CREATE
from .docker_gateway import DockerGateway, DockerGatewayError, is_ours
from .local import check_claim
from .plan import NetworkPlan, Resources, Security, VolumePlan, Workload

#: the node a volume record's volume lives on (a node id), set when its first task lands
LABEL_NODE = f"{names.LABEL_PREFIX}.node"
LABEL_NODE_NAME = f"{names.LABEL_PREFIX}.node-name"
#: the directory of the shared export a volume record's volume is (its rendered ``device``), once it was made there
LABEL_SHARED_DIRECTORY = f"{names.LABEL_PREFIX}.shared-directory"
#: labels of a volume record that must not be copied onto the volume itself
RECORD_ONLY_LABELS = (
    names.LABEL_PASSWORD,
    names.LABEL_DB_PASSWORD,
    LABEL_NODE,
    LABEL_NODE_NAME,
    LABEL_SHARED_DIRECTORY,
)

NANO = 1_000_000_000
#: task states after which a task never runs again (Swarm's own words)
ENDED_STATES = ("complete", "failed", "shutdown", "rejected", "orphaned", "remove")
#: states of a task that has not been given to a node's engine yet
UNASSIGNED_STATES = ("new", "pending", "allocated")
TASK_CHECK_INTERVAL = 0.25
ADMIN_AVAILABILITY = {"drain": "is drained by an admin", "pause": "is paused by an admin"}


# -- pure builders --------------------------------------------------------------------------------------------------


def resources_spec(resources: Resources, pids_limit: int | None) -> dict[str, Any]:
    """Swarm's ``Resources``: limits are enforced on the node (cgroups); reservations are what the scheduler
    places by, so a node is never given more guaranteed memory or CPU than it has."""
    limits: dict[str, Any] = {}
    reservations: dict[str, Any] = {}
    if resources.cpu_limit is not None:
        limits["NanoCPUs"] = int(round(resources.cpu_limit * NANO))
    if resources.mem_limit is not None:
        limits["MemoryBytes"] = int(resources.mem_limit)
    if pids_limit is not None:
        limits["Pids"] = int(pids_limit)  # API 1.41
    if resources.cpu_guarantee is not None:
        reservations["NanoCPUs"] = int(round(resources.cpu_guarantee * NANO))
    if resources.mem_guarantee is not None:
        reservations["MemoryBytes"] = int(resources.mem_guarantee)
    return {"Limits": limits, "Reservations": reservations}


def security_spec(security: Security) -> dict[str, Any]:
    """The hardening a service's ``ContainerSpec`` can carry on API 1.41: an init process and capabilities.
    ``no_new_privileges`` has no field in a service spec before API 1.46 (documented in docs/swarm-spawner.md)."""
    spec: dict[str, Any] = {"Init": security.init}
    if security.cap_drop:
        spec["CapabilityDrop"] = list(security.cap_drop)
    if security.cap_add:
        spec["CapabilityAdd"] = list(security.cap_add)
    return spec


def volume_mount(
    source: str,
    target: str,
    read_only: bool,
    labels: Mapping[str, str],
    driver: str = "",
    driver_options: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A named volume mount (never a bind: a host path means a different directory on every node). The node
    that runs the task creates the volume with these labels and driver on first use."""
    options: dict[str, Any] = {"Labels": dict(labels)}
    if driver or driver_options:
        options["DriverConfig"] = {"Name": driver or "local", "Options": dict(driver_options or {})}
    return {"Type": "volume", "Source": source, "Target": target, "ReadOnly": read_only, "VolumeOptions": options}


#: the fields a shared volume's driver options may use: the volume's name, its user's slug and the hub's prefix
VOLUME_OPTION_FIELDS = ("volume", "user", "prefix")
#: where the directory maker mounts the shared export's root
EXPORT_ROOT_MOUNT = "/mnt/multiuser-spawner-export"
#: Docker's own driver, whose ``device`` option is a path (NFS, CIFS, a bind): one directory per volume
LOCAL_DRIVERS = ("", "local")


def volume_option_fields(volume: str, labels: Mapping[str, str]) -> dict[str, str]:
    """The values of :data:`VOLUME_OPTION_FIELDS` for a volume of the workload labelled ``labels``."""
    user = labels.get(names.LABEL_USER, "")
    return {
        "volume": volume,
        "user": names.safe_slug(user, names.MAX_USER_SLUG) if user else "",
        "prefix": labels.get(names.LABEL_HUB, ""),
    }


def render_driver_options(options: Mapping[str, str], fields: Mapping[str, str]) -> dict[str, str]:
    """One volume's driver options: each value filled from ``fields`` (checked at hub start)."""
    return {key: value.format(**fields) for key, value in options.items()}


def check_volume_driver_options(driver: str, options: Mapping[str, str], setting: str) -> None:
    """Refuse, naming ``setting``, options that use an unknown field, or (with the local driver) that would give
    every volume the same directory: the local driver's ``device`` is a path, so it must name the volume, below a
    fixed directory (the export's root, which the spawner mounts to make each volume's directory)."""
    sample = {"volume": "jh-sample_home", "user": "sample", "prefix": "jh"}
    for key, value in options.items():
        try:
            value.format(**sample)
        except (KeyError, IndexError, ValueError, AttributeError) as e:
            raise ValueError(
                f"{setting}[{key!r}]: cannot fill {value!r} ({e!r}); the fields are "
                + ", ".join(f"{{{f}}}" for f in VOLUME_OPTION_FIELDS)
            ) from None
    if driver not in LOCAL_DRIVERS or not options:
        return
    device = options.get("device", "")
    if "{volume}" not in device:
        raise ValueError(
            f"{setting}['device'] is {device!r}: with the local driver it must contain {{volume}}, or every user's "
            "volumes would be one directory (e.g. ':/exports/{volume}' for NFS)"
        )
    for key, value in options.items():
        if key != "device" and "{" in value:
            raise ValueError(
                f"{setting}[{key!r}]: with the local driver only 'device' names the volume; {value!r} must be the "
                "same for every volume"
            )
    root, _ = split_device(device)
    if not root.strip("/:"):
        raise ValueError(
            f"{setting}['device'] is {device!r}: the part before its first field must name the export's directory "
            "(e.g. ':/exports/{volume}'), which the spawner mounts to make each volume's directory"
        )


def split_device(device: str) -> tuple[str, str]:
    """``device`` (a template) as the fixed directory before its first field, and the rest (still a template):
    ``":/exports/{user}/{volume}"`` -> ``(":/exports", "{user}/{volume}")``."""
    parts = device.split("/")
    first = next((i for i, part in enumerate(parts) if "{" in part), len(parts))
    return "/".join(parts[:first]), "/".join(parts[first:])


def export_root_options(driver_options: Mapping[str, str]) -> dict[str, str]:
    """The local driver's options of the shared export's root: ``device`` cut before its first field."""
    root, _ = split_device(driver_options["device"])
    return {**driver_options, "device": root}


def export_volume_name(prefix: str, root_options: Mapping[str, str]) -> str:
    """The hub's volume of the export's root on a node. Named after the options: a node keeps a volume of a
    name it knows with the options it was made with, so other options (another export) must get another name.
    ``_`` after the prefix: no user's object is named so (theirs are ``<prefix>-<user>...``)."""
    digest = hashlib.sha256(json.dumps(dict(sorted(root_options.items()))).encode()).hexdigest()[:8]
    return names.fit_name(f"{prefix}_shared-export-{digest}")


def directory_maker_job(
    *,
    name: str,
    image: str,
    labels: Mapping[str, str],
    export_volume: str,
    export_labels: Mapping[str, str],
    driver_options: Mapping[str, str],
    directories: list[str],
    placement: Placement,
) -> Job:
    """A job that makes the volumes' ``directories`` (relative to the export's root) on the shared export. A node
    can make a directory there only by mounting the export itself: the volume ``export_volume``, of the same driver
    options with the root as ``device``, which stays on the node for the next time (Swarm would not remove an
    anonymous one with the task, and the manager cannot reach a node's volumes). It runs as root: the export's root
    is root's; Docker's first mount then gives each directory to the image's user (it copies the image's content
    and ownership into an empty volume)."""
    mount = {
        "Type": "volume",
        "Source": export_volume,
        "Target": EXPORT_ROOT_MOUNT,
        "VolumeOptions": {
            "NoCopy": True,
            "Labels": dict(export_labels),
            "DriverConfig": {"Name": "local", "Options": export_root_options(driver_options)},
        },
    }
    return Job(
        name=name,
        image=image,
        command=("mkdir", "-p", "--", *(f"{EXPORT_ROOT_MOUNT}/{d}" for d in directories)),
        labels=labels,
        placement=placement,
        mounts=(mount,),
    )


def restart_policy(restarts_on_failure: int) -> dict[str, Any]:
    """``none`` unless the plan lets the engine restart a crashed workload by itself (services, not notebooks:
    the hub decides whether a notebook runs)."""
    if restarts_on_failure:
        return {"Condition": "on-failure", "MaxAttempts": restarts_on_failure}
    return {"Condition": "none"}


@dataclass(frozen=True)
class Placement:
    """Where a workload may run: the admin's constraints and preferences, and the node its volumes pin it to."""

    constraints: tuple[str, ...] = ()
    preferences: tuple[Mapping[str, Any], ...] = ()
    pinned_node: str = ""

    def spec(self) -> dict[str, Any]:
        constraints = list(self.constraints)
        if self.pinned_node:
            constraints.append(f"node.id=={self.pinned_node}")
        placement: dict[str, Any] = {}
        if constraints:
            placement["Constraints"] = constraints
        if self.preferences:
            placement["Preferences"] = [dict(p) for p in self.preferences]
        return placement


@dataclass(frozen=True)
class Job:
    """A command to run once, as root, where ``placement`` allows: what the hub must do on a node it cannot reach
    (a node's volumes and containers live in that node's engine)."""

    name: str
    image: str
    command: tuple[str, ...]
    labels: Mapping[str, str]
    placement: Placement
    mounts: tuple[Mapping[str, Any], ...] = ()


def job_service_spec(job: Job) -> dict[str, Any]:
    """The Engine API's service spec of a job: one task, never restarted."""
    container: dict[str, Any] = {
        "Image": job.image,
        "Command": list(job.command),
        "User": "0",
        "Labels": dict(job.labels),
    }
    if job.mounts:
        container["Mounts"] = [dict(m) for m in job.mounts]
    return {
        "name": job.name,
        "labels": dict(job.labels),
        "task_template": {
            "ContainerSpec": container,
            "RestartPolicy": {"Condition": "none"},
            "Placement": job.placement.spec(),
        },
        "mode": {"Replicated": {"Replicas": 1}},
    }


def service_from_workload(
    workload: Workload,
    *,
    network_id: str,
    placement: Placement,
    volume_labels: Mapping[str, Mapping[str, str]],
    stop_grace_seconds: int,
    volume_driver: str = "",
    volume_driver_options: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The keyword arguments of docker-py's ``create_service`` for ``workload``: one replica, on its private
    overlay network by DNS round robin (no virtual IP: one task per service, and a kernel without IPVS cannot route
    to a VIP), publishing no port. ``volume_labels`` gives each mounted volume's labels by name; the driver options
    are filled for each volume (:func:`render_driver_options`)."""
    w = workload
    container: dict[str, Any] = {
        "Image": w.image,
        "Labels": dict(w.labels),
        "Env": [f"{key}={value}" for key, value in w.environment.items()],
        "Mounts": [
            volume_mount(
                m.source,
                m.target,
                m.read_only,
                volume_labels.get(m.source) or {},
                volume_driver,
                render_driver_options(volume_driver_options or {}, volume_option_fields(m.source, w.labels)),
            )
            for m in w.mounts
        ],
        "StopGracePeriod": stop_grace_seconds * NANO,
        **security_spec(w.security),
    }
    if w.command:
        container["Args"] = list(w.command)
    if w.hostname:
        container["Hostname"] = w.hostname
    if w.stop_signal:
        container["StopSignal"] = w.stop_signal
    # of the admin's extra_create_kwargs, only the user means the same in a service spec
    user = (w.engine_extras.get(EXTRA_CREATE) or {}).get("user")
    if user:
        container["User"] = str(user)
    network: dict[str, Any] = {"Target": network_id}
    if w.aliases:
        network["Aliases"] = list(w.aliases)
    return {
        "name": w.name,
        "labels": dict(w.labels),
        "mode": {"Replicated": {"Replicas": 1}},
        "endpoint_spec": {"Mode": "dnsrr"},
        "task_template": {
            "ContainerSpec": container,
            "Resources": resources_spec(w.resources, w.security.pids_limit),
            "RestartPolicy": restart_policy(w.restarts_on_failure),
            "Placement": placement.spec(),
            "Networks": [network],
        },
    }


def overlay_network_config(plan: NetworkPlan, encrypted: bool) -> dict[str, Any]:
    """A server's private overlay: attachable, so the hub's container (not a service) can join it; encrypted
    (IPsec between nodes) when asked."""
    config: dict[str, Any] = {
        "name": plan.name,
        "driver": "overlay",
        "attachable": True,
        "labels": dict(plan.labels),
        "check_duplicate": True,
    }
    if encrypted:
        config["options"] = {"encrypted": "true"}
    return config


def volume_labels_of_record(record_labels: Mapping[str, str]) -> dict[str, str]:
    """What a volume made from a record carries: the record's labels without the password and the pin."""
    return {k: v for k, v in record_labels.items() if k not in RECORD_ONLY_LABELS}


def latest_task(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest task of one service (a service of one replica has one task at a time, and older ones kept
    for history)."""
    return max(tasks, key=lambda t: t.get("CreatedAt", ""), default=None)


def task_state(task: dict[str, Any]) -> str:
    return (task.get("Status") or {}).get("State", "")


def task_failure(task: dict[str, Any]) -> str:
    """Swarm's reason when ``task`` can never run (or ended), else "". A pending task with an error is one the
    scheduler cannot place (no node meets its constraints or its reservations): waiting does not help."""
    status = task.get("Status") or {}
    state = status.get("State", "")
    error = status.get("Err") or ""
    if state in ENDED_STATES:
        exit_code = (status.get("ContainerStatus") or {}).get("ExitCode")
        detail = error or status.get("Message") or ""
        code = f", exit code {exit_code}" if exit_code not in (None, 0) or state == "failed" else ""
        return f"task {state}{code}: {detail}".rstrip(": ")
    if state in UNASSIGNED_STATES and error:
        return f"task {state}: {error}"
    return ""


def task_address(task: dict[str, Any], network: str) -> str:
    """The task's address on ``network`` (by name), without its prefix length; "" when it has none."""
    for attachment in task.get("NetworksAttachments") or []:
        if ((attachment.get("Network") or {}).get("Spec") or {}).get("Name") == network:
            for address in attachment.get("Addresses") or []:
                return address.split("/", 1)[0]
    return ""


def node_unavailable(node: dict[str, Any]) -> str:
    """Why a node cannot take a task now ("" when it can): down, or drained or paused by an admin."""
    state = (node.get("Status") or {}).get("State", "unknown")
    availability = (node.get("Spec") or {}).get("Availability", "unknown")
    if state != "ready":
        return f"is {state}"
    if availability != "active":
        return ADMIN_AVAILABILITY.get(availability, f"is {availability}")
    return ""


def node_name(node: dict[str, Any]) -> str:
    return (node.get("Description") or {}).get("Hostname") or node.get("ID", "")


# -- Swarm calls ----------------------------------------------------------------------------------------------------


class SwarmGateway(DockerGateway):
    """:class:`DockerGateway` with the Swarm calls, and a shared view of tasks and nodes for ``poll()``."""

    def __init__(self, client: Any, concurrency: int, view_max_age: float):
        super().__init__(client, concurrency, view_max_age)
        self.tasks_view = TaskView(self, max_age=view_max_age)

    async def inspect_service(self, name_or_id: str) -> dict[str, Any] | None:
        return await self._call(
            f"inspecting service {name_or_id}", self.client.inspect_service, name_or_id, if_missing=None
        )

    async def create_service(self, spec: Mapping[str, Any]) -> str:
        created = await self._call(f"creating service {spec['name']}", self.client.create_service, **spec)
        return created["ID"]

    async def remove_service(self, name_or_id: str) -> None:
        await self._call(f"removing service {name_or_id}", self.client.remove_service, name_or_id, if_missing=None)

    async def tasks_of(self, service_id: str) -> list[dict[str, Any]]:
        return await self._call(
            f"listing the tasks of service {service_id}", self.client.tasks, filters={"service": service_id}
        )

    async def all_tasks(self) -> list[dict[str, Any]]:
        return await self._call("listing the swarm's tasks", self.client.tasks)

    async def nodes(self) -> list[dict[str, Any]]:
        return await self._call("listing the swarm's nodes", self.client.nodes)

    async def inspect_node(self, node_id: str) -> dict[str, Any] | None:
        return await self._call(f"inspecting node {node_id}", self.client.inspect_node, node_id, if_missing=None)

    async def service_logs_tail(self, name_or_id: str, lines: int) -> str:
        """Its last log lines; "" when there are none or they cannot be read (they only add to a failure's
        message, which must not fail in turn)."""

        def read() -> str:
            raw = self.client.service_logs(name_or_id, stdout=True, stderr=True, tail=lines, follow=False)
            return b"".join(raw).decode("utf-8", "replace") if not isinstance(raw, bytes) else raw.decode()

        try:
            return await self._call(f"reading the logs of service {name_or_id}", read, if_missing="")
        except DockerGatewayError:
            return ""

    async def inspect_record(self, name: str) -> dict[str, Any] | None:
        """A volume record (a Swarm config) by name."""
        found = await self._call(f"looking up the record of volume {name}", self.client.configs, filters={"name": name})
        exact = [c for c in found if (c.get("Spec") or {}).get("Name") == name]
        return exact[0] if exact else None

    async def create_record(self, name: str, labels: Mapping[str, str]) -> bool:
        """Create the record unless one of that name exists; True when made now."""
        data = json.dumps({"volume": name})
        try:
            await self._call(
                f"creating the record of volume {name}", self.client.create_config, name, data, labels=dict(labels)
            )
        except DockerGatewayError as e:
            if e.status_code == 409:
                return False
            raise
        return True

    async def update_record_labels(self, record: dict[str, Any], labels: Mapping[str, str]) -> None:
        """Only a config's labels may change; its data never does."""
        spec = {**record["Spec"], "Labels": dict(labels)}

        def update() -> None:
            url = self.client._url("/configs/{0}/update", record["ID"])
            response = self.client._post_json(url, params={"version": record["Version"]["Index"]}, data=spec)
            self.client._raise_for_status(response)

        await self._call(f"updating the record of volume {spec['Name']}", update)

    async def remove_record(self, name_or_id: str) -> None:
        await self._call(
            f"removing the record of volume {name_or_id}", self.client.remove_config, name_or_id, if_missing=None
        )

    async def list_records(self, label_filters: list[str]) -> list[dict[str, Any]]:
        return await self._call("listing volume records", self.client.configs, filters={"label": label_filters})

    async def list_services(self, label_filters: list[str]) -> list[dict[str, Any]]:
        return await self._call("listing services", self.client.services, filters={"label": label_filters})


async def run_job(gateway: SwarmGateway, job: Job, timeout: float) -> tuple[int, str]:
    """Run the job to its end; its exit code and output. Its service is removed afterwards, whatever happened;
    one of the hub's own left under the job's name (by a hub that stopped while it ran) is replaced."""
    left = await gateway.inspect_service(job.name)
    if left is not None:
        labels = left["Spec"].get("Labels") or {}
        if labels.get(names.LABEL_ROLE) != names.ROLE_JOB or labels.get(names.LABEL_HUB) != job.labels.get(
            names.LABEL_HUB
        ):
            raise DockerGatewayError(f"the service name {job.name} is taken by a service that is not this hub's job")
        await gateway.remove_service(left["ID"])
    service_id = await gateway.create_service(job_service_spec(job))
    try:
        task = await _job_ended(gateway, job, service_id, timeout)
        status = task.get("Status") or {}
        exit_code = (status.get("ContainerStatus") or {}).get("ExitCode")
        output = await gateway.service_logs_tail(service_id, 20)
        if exit_code is None:
            raise DockerGatewayError(f"{job.name} did not run: {status.get('Err') or task_state(task)}")
        return int(exit_code), output
    finally:
        await gateway.remove_service(service_id)


async def _job_ended(gateway: SwarmGateway, job: Job, service_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = latest_task(await gateway.tasks_of(service_id))
        if task is not None and task_state(task) in ENDED_STATES:
            return task
        await asyncio.sleep(TASK_CHECK_INTERVAL)
    raise DockerGatewayError(f"{job.name} had not ended after {timeout:g} s")


class TaskView:
    """The project's tasks (and the nodes) as of one list request each, refreshed when older than ``max_age``:
    every server's ``poll()`` reads the same snapshot."""

    def __init__(self, gateway: SwarmGateway, max_age: float):
        self._gateway = gateway
        self.max_age = max_age
        self._by_service: dict[str, list[dict[str, Any]]] = {}
        self._nodes: dict[str, dict[str, Any]] = {}
        self._taken_at = float("-inf")
        self._refresh_task: asyncio.Task[None] | None = None
        self.refreshes = 0

    async def latest(self, service_id: str, not_older_than: float = float("-inf")) -> dict[str, Any] | None:
        return latest_task(await self.tasks(service_id, not_older_than))

    async def tasks(self, service_id: str, not_older_than: float = float("-inf")) -> list[dict[str, Any]]:
        """The service's tasks in a snapshot taken after ``not_older_than`` (or the one being taken): the spawns,
        stops and polls of every server of the hub wait on the same list request."""
        if self._taken_at < max(not_older_than, time.monotonic() - self.max_age):
            if self._refresh_task is None or self._refresh_task.done():
                self._refresh_task = asyncio.ensure_future(self._take_snapshot())
            await asyncio.shield(self._refresh_task)
        return self._by_service.get(service_id, [])

    def node(self, node_id: str) -> dict[str, Any] | None:
        return self._nodes.get(node_id)

    async def _take_snapshot(self) -> None:
        started = time.monotonic()
        tasks, nodes = await asyncio.gather(self._gateway.all_tasks(), self._gateway.nodes())
        by_service: dict[str, list[dict[str, Any]]] = {}
        for task in tasks:
            labels = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}
            if labels.get(names.LABEL_MANAGED) == "true":
                by_service.setdefault(task.get("ServiceID", ""), []).append(task)
        self._by_service = by_service
        self._nodes = {node["ID"]: node for node in nodes}
        self._taken_at = started
        self.refreshes += 1


# -- the engine -----------------------------------------------------------------------------------------------------


class WorkloadNotRunning(DockerGatewayError):
    """A workload's task ended, or can never start."""


class SwarmEngine:
    def __init__(
        self,
        gateway: SwarmGateway,
        *,
        hub_container: str = "",
        stop_timeout: int = 10,
        encrypted_networks: bool = False,
        placement: Placement = Placement(),
        volume_driver: str = "",
        volume_driver_options: Mapping[str, str] | None = None,
        assign_timeout: float = 60,
        owner: names.Owner | None = None,
    ):
        #: whose objects this engine may touch by name; ``None``: any object with the project's label
        self.owner = owner
        self.gateway = gateway
        self.hub_container = hub_container
        self.stop_timeout = stop_timeout
        self.encrypted_networks = encrypted_networks
        self.placement = placement
        self.volume_driver = volume_driver
        self.volume_driver_options = dict(volume_driver_options or {})
        self.assign_timeout = assign_timeout

    @property
    def shared_volumes(self) -> bool:
        """Volumes every node reaches (a driver, or the local driver's NFS options): nothing to pin."""
        return bool(self.volume_driver or self.volume_driver_options)

    @property
    def makes_directories(self) -> bool:
        """The local driver's shared volumes are directories of an export (``device``) that must exist before a
        node mounts one; another driver makes its volumes itself."""
        return self.volume_driver in LOCAL_DRIVERS and "device" in self.volume_driver_options

    # -- networks -----------------------------------------------------------------------------------------------

    async def ensure_network(self, plan: NetworkPlan) -> bool:
        existing = await self.gateway.inspect_network(plan.name)
        if existing is not None and not is_ours(existing):
            raise DockerGatewayError(
                f"the network name {plan.name} is taken by a network multiuser-spawner did not create; "
                "an admin must rename or remove that network"
            )
        check_claim("network", plan.name, (existing or {}).get("Labels"), names.owner_from_labels(plan.labels))
        return existing is None and await self.gateway.ensure_network(
            overlay_network_config(plan, self.encrypted_networks)
        )

    async def join_network(self, name: str) -> None:
        if self.hub_container:
            await self.gateway.connect_network(name, self.hub_container)

    async def remove_network(self, name: str) -> None:
        found = await self.gateway.inspect_network(name)
        if found is None or not self.claims(found):
            return
        if self.hub_container:
            await self.gateway.disconnect_network(name, self.hub_container)
        # A removed service's endpoints leave the network a moment after its tasks are gone, and the network
        # itself leaves a moment after its removal: a start right after a stop must not find it half-removed.
        deadline = time.monotonic() + 30
        while await self.gateway.inspect_network(name) is not None:
            try:
                await self.gateway.remove_network(name)
            except DockerGatewayError:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise DockerGatewayError(f"network {name} was still there 30 s after its removal")
            await asyncio.sleep(TASK_CHECK_INTERVAL)

    # -- volumes --------------------------------------------------------------------------------------------------

    async def ensure_volume(self, plan: VolumePlan) -> tuple[Mapping[str, str], bool]:
        record = await self.gateway.inspect_record(plan.name)
        if record is not None:
            labels = record["Spec"].get("Labels") or {}
            check_claim("volume", plan.name, labels, names.owner_from_labels(plan.labels))
            return labels, False
        if await self.gateway.create_record(plan.name, plan.labels):
            return plan.labels, True
        record = await self.gateway.inspect_record(plan.name)  # made by a concurrent spawn meanwhile
        return (record or {}).get("Spec", {}).get("Labels") or {}, False

    async def _records(self, workload: Workload) -> dict[str, dict[str, Any]]:
        found = await asyncio.gather(*(self.gateway.inspect_record(m.source) for m in workload.mounts))
        return {m.source: r for m, r in zip(workload.mounts, found, strict=True) if r is not None}

    async def _pinned_node(self, workload: Workload, records: Mapping[str, dict[str, Any]]) -> str:
        """The node the workload's volumes live on ("" for none yet, or shared volumes); raise at once when that
        node cannot take it, naming the node."""
        if self.shared_volumes:
            return ""
        pins = {name: r["Spec"].get("Labels", {}).get(LABEL_NODE, "") for name, r in records.items()}
        nodes = {node for node in pins.values() if node}
        if not nodes:
            return ""
        if len(nodes) > 1:
            raise DockerGatewayError(
                f"the volumes of {workload.name} live on different nodes ({', '.join(sorted(nodes))}); "
                "an admin must move them to one node"
            )
        (node_id,) = nodes
        node = await self.gateway.inspect_node(node_id)
        volumes = ", ".join(sorted(name for name, pin in pins.items() if pin))
        if node is None:
            raise DockerGatewayError(
                f"{workload.name} must run on node {node_id}, where its volumes ({volumes}) live, but that node has "
                "left the swarm; an admin must bring it back or move the volumes"
            )
        why = node_unavailable(node)
        if why:
            raise DockerGatewayError(
                f"{workload.name} must run on node {node_name(node)} ({node_id}), where its volumes ({volumes}) "
                f"live, but that node {why}; an admin must make it available again "
                f"(docker node update --availability active {node_name(node)}) or move the volumes"
            )
        return node_id

    async def _make_shared_directories(self, workload: Workload, records: Mapping[str, dict[str, Any]]) -> bool:
        """Make on the shared export the directory of each of the workload's volumes not made there yet (a volume's
        record remembers its directory once made), with one short task on a node the workload may use: the hub
        cannot reach the nodes' file systems, and a directory the export lacks fails the mount. True when it ran."""
        if not self.makes_directories or not workload.mounts:
            return False
        _, relative = split_device(self.volume_driver_options["device"])
        wanted: dict[str, str] = {}
        for mount in workload.mounts:
            fields = volume_option_fields(mount.source, workload.labels)
            device = self.volume_driver_options["device"].format(**fields)
            record_labels = (records.get(mount.source) or {}).get("Spec", {}).get("Labels") or {}
            if record_labels.get(LABEL_SHARED_DIRECTORY) != device:
                wanted[mount.source] = relative.format(**fields)
        if not wanted:
            return False
        owner = names.owner_from_labels(workload.labels)
        export_labels = {
            names.LABEL_MANAGED: "true",
            names.LABEL_HUB: owner.hub,
            names.LABEL_ROLE: names.ROLE_SHARED_EXPORT,
        }
        # "_-" never occurs in a name the default templates give (slugs and service keys hold no "_"), so this
        # one-shot service never meets a user's notebook or service
        job = directory_maker_job(
            name=names.fit_name(f"{workload.name}_-mkdir"),
            image=workload.image,
            labels=owner.labels(names.ROLE_JOB),
            export_volume=export_volume_name(owner.hub, export_root_options(self.volume_driver_options)),
            export_labels=export_labels,
            driver_options=self.volume_driver_options,
            directories=sorted(set(wanted.values())),
            placement=Placement(self.placement.constraints, self.placement.preferences),
        )
        what = f"making the directories of {', '.join(sorted(wanted))} on the export"
        exit_code, output = await run_job(self.gateway, job, self.assign_timeout + self.stop_timeout + 30)
        if exit_code != 0:
            raise DockerGatewayError(f"{what} failed: exit code {exit_code}; output: {output.strip() or '(no output)'}")
        for name in records:
            if name in wanted:
                device = self.volume_driver_options["device"].format(**volume_option_fields(name, workload.labels))
                await self._add_record_label(name, LABEL_SHARED_DIRECTORY, device)
        return True

    async def _add_record_label(self, name: str, key: str, value: str) -> None:
        """Set one label of a volume's record, read afresh: another server of the same user (sharing its home) may
        have changed the record meanwhile, and Swarm refuses an update of an older version."""
        for attempt in range(3):
            record = await self.gateway.inspect_record(name)
            if record is None or (record["Spec"].get("Labels") or {}).get(key) == value:
                return
            try:
                await self.gateway.update_record_labels(record, {**(record["Spec"].get("Labels") or {}), key: value})
                return
            except DockerGatewayError:
                if attempt == 2:
                    raise

    async def _remember_node(self, records: Mapping[str, dict[str, Any]], task: dict[str, Any]) -> None:
        """Pin each volume that was not yet to the node its first task landed on."""
        if self.shared_volumes:
            return
        node_id = task.get("NodeID") or ""
        node = self.gateway.tasks_view.node(node_id) or await self.gateway.inspect_node(node_id) or {}
        for record in records.values():
            labels = dict(record["Spec"].get("Labels") or {})
            if not labels.get(LABEL_NODE):
                labels[LABEL_NODE] = node_id
                labels[LABEL_NODE_NAME] = node_name(node) if node else node_id
                await self.gateway.update_record_labels(record, labels)

    # -- workloads --------------------------------------------------------------------------------------------------

    async def start_workload(self, workload: Workload) -> str:
        existing = await self.gateway.inspect_service(workload.name)
        if existing is not None:
            if not is_ours(existing["Spec"]):
                raise DockerGatewayError(
                    f"the service name {workload.name} is taken by a service multiuser-spawner did not create; "
                    "an admin must rename or remove that service"
                )
            check_claim(
                "service", workload.name, existing["Spec"].get("Labels"), names.owner_from_labels(workload.labels)
            )
            # Left by a hub that died: its task gets its clean stop before the new one mounts the same volumes.
            await self._remove_and_wait(existing["ID"])
        records = await self._records(workload)
        pinned = await self._pinned_node(workload, records)
        if await self._make_shared_directories(workload, records):
            records = await self._records(workload)  # their labels (and versions) changed
        network = await self.gateway.inspect_network(workload.network)
        if network is None:
            raise DockerGatewayError(f"network {workload.network} of {workload.name} is missing")
        volume_labels = {name: volume_labels_of_record(r["Spec"].get("Labels") or {}) for name, r in records.items()}
        spec = service_from_workload(
            workload,
            network_id=network["Id"],
            placement=Placement(self.placement.constraints, self.placement.preferences, pinned),
            volume_labels=volume_labels,
            stop_grace_seconds=self.stop_timeout,
            volume_driver=self.volume_driver,
            volume_driver_options=self.volume_driver_options,
        )
        service_id = await self.gateway.create_service(spec)
        task = await self._wait_until_assigned(workload.name, service_id)
        await self._remember_node(records, task)
        return service_id

    async def _wait_until_assigned(self, name: str, service_id: str) -> dict[str, Any]:
        """The service's task once a node has it; raise with Swarm's reason as soon as it can never run."""
        deadline = time.monotonic() + self.assign_timeout
        while time.monotonic() < deadline:
            task = await self._fresh_task(service_id)
            if task is not None:
                failure = task_failure(task)
                if failure:
                    raise WorkloadNotRunning(f"service {name} cannot run: {failure}")
                if task.get("NodeID") and task_state(task) not in UNASSIGNED_STATES:
                    return task
            await asyncio.sleep(TASK_CHECK_INTERVAL)
        raise WorkloadNotRunning(f"service {name}: no node took its task in {self.assign_timeout:g} s")

    async def _remove_and_wait(self, service_id: str, timeout: float | None = None) -> None:
        """Remove the service, then wait until its tasks are gone (their containers stopped and removed), so its
        volumes are free and its network has no endpoint left."""
        await self.gateway.remove_service(service_id)
        deadline = time.monotonic() + (timeout if timeout is not None else self.stop_timeout + 30)
        while time.monotonic() < deadline:
            # Swarm no longer knows the service by then, but its tasks are still listed until they are gone
            if not await self.gateway.tasks_view.tasks(service_id, time.monotonic() - TASK_CHECK_INTERVAL):
                return
            await asyncio.sleep(TASK_CHECK_INTERVAL)
        raise DockerGatewayError(f"the tasks of service {service_id} were still there {deadline:g} s after removal")

    async def _ours(self, name: str) -> dict[str, Any] | None:
        found = await self.gateway.inspect_service(name)
        return found if found is not None and self.claims(found["Spec"]) else None

    def claims(self, obj: dict[str, Any]) -> bool:
        """Whether an object (a network, or a service's spec) carries our label and (when the engine has an owner)
        is the owner's: another hub's or another user's object under our name is never touched."""
        if not is_ours(obj):
            return False
        return self.owner is None or names.claim_problem(obj.get("Labels") or {}, self.owner) is None

    async def stop_workload(self, name: str, timeout: int, remove: bool = False) -> None:
        """A service is stopped by removing it (its task gets the stop grace period of its spec); there is no
        stopped service to keep, so ``remove`` changes nothing."""
        found = await self._ours(name)
        if found is not None:
            await self._remove_and_wait(found["ID"], timeout + 30)

    async def remove_workload(self, name: str) -> None:
        found = await self._ours(name)
        if found is not None:
            await self._remove_and_wait(found["ID"])

    async def task_of(self, name: str) -> dict[str, Any] | None:
        found = await self._ours(name)
        return await self._fresh_task(found["ID"]) if found is not None else None

    async def _fresh_task(self, service_id: str) -> dict[str, Any] | None:
        """The service's newest task, from a task list no older than one check interval, shared by every spawn."""
        return await self.gateway.tasks_view.latest(service_id, time.monotonic() - TASK_CHECK_INTERVAL)

    async def address(self, name: str, network: str, since: float) -> str:
        task = await self.task_of(name)
        if task is None:
            raise WorkloadNotRunning(f"service {name} is gone")
        failure = task_failure(task)
        if failure:
            raise WorkloadNotRunning(f"service {name} stopped: {failure}")
        if task_state(task) != "running":
            return ""
        return task_address(task, network)

    async def run_inside(self, name: str, command: list[str]) -> tuple[int, str]:
        """Commands run only in a running task on the hub's own engine: another node's engine is out of the hub's
        reach. Elsewhere the answer is a failed run that says so, and readiness goes on checking over the network
        (which every preset does)."""
        task = await self.task_of(name)
        status = (task or {}).get("Status") or {}
        container = (status.get("ContainerStatus") or {}).get("ContainerID", "")
        if status.get("State") != "running" or not container or await self.gateway.inspect_container(container) is None:
            return 1, (
                f"cannot run a command in service {name}: its task is not running on the hub's node (a readiness "
                "command needs that; on a swarm use a check over the network: tcp, postgres, redis, amqp, mysql)"
            )
        return await self.gateway.exec_run(container, command)

    async def logs_tail(self, name: str, lines: int = 20) -> str:
        return await self.gateway.service_logs_tail(name, lines)
