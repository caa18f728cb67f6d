"""MultiUserSwarmSpawner: the same plan of a server (notebook, services, network, volumes), run on a Docker Swarm.

The orchestration is :class:`~.spawner.MultiUserSpawner`'s; this class only swaps the engine
(:class:`~.swarm.SwarmEngine`) and the few places where the spawner asks the engine about the notebook itself:
its name (Swarm refuses ``.``), its home volume (made on its node by its task), its address (its task's, on the
private overlay), whether it still runs (the shared task list), and the deletion of a user.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from traitlets import Bool, Dict, Float, List, Unicode, default

from . import names, plan, services
from .docker_gateway import DockerGatewayError
from .progress import SpawnProgress
from .spawner import MultiUserSpawner, SpawnFailed
from .swarm import (
    LABEL_NODE,
    LABEL_NODE_NAME,
    Placement,
    SwarmEngine,
    SwarmGateway,
    WorkloadNotRunning,
    check_volume_driver_options,
    latest_task,
    node_name,
    task_failure,
    task_state,
)
from .swarm_jobs import NOT_OOM_KILLED, OOM_KILLED, oom_check_job, remove_volume_on_node, run_job
from .tcp import accepts_tcp, connect_intervals

STATE_NODE = "swarm_node"
#: how fresh "does the notebook's task still run" must be while waiting for it to listen (one shared list)
TASK_STATE_INTERVAL = 0.5
OOM_CHECK_TIMEOUT = 60
#: what a container killed by its memory limit exits with (128 + SIGKILL), as a plain kill does too
OOM_EXIT_CODE = 137


class MultiUserSwarmSpawner(MultiUserSpawner):
    """One image, many users, many hosts: each server's notebook and services as Swarm services on a private
    overlay network, each user kept on the node that holds their volumes."""

    _gateways: ClassVar[dict[type, SwarmGateway]] = {}  # type: ignore[assignment]
    gateway_class = SwarmGateway
    _node: str = ""
    #: the notebook containers whose node was asked whether their memory limit killed them
    _oom_checked: frozenset[str] = frozenset()

    swarm_placement_constraints = List(
        Unicode(),
        default_value=[],
        help="""Swarm placement constraints of every service of a server (``["node.labels.tier==gpu"]``); per tier
        through ``group_overrides``. A user's volumes add ``node.id==<their node>`` unless volumes are shared.""",
    ).tag(config=True)

    swarm_placement_preferences = List(
        Dict(),
        default_value=[],
        help="""Swarm placement preferences of every service of a server, as in the Engine API
        (``[{"Spread": {"SpreadDescriptor": "node.labels.rack"}}]``); per tier through ``group_overrides``.""",
    ).tag(config=True)

    swarm_encrypted_networks = Bool(
        False,
        help="""Encrypt each server's overlay network between nodes (IPsec; Docker's ``encrypted`` option). Costs
        CPU on every packet that crosses hosts.""",
    ).tag(config=True)

    volume_driver = Unicode(
        "",
        help="""Volume driver of users' volumes (homes and services' data) on the nodes. Empty: the local driver.
        Setting it (or ``volume_driver_options``) declares the volumes shared: a user may then start on any node
        instead of the one that holds their files.""",
    ).tag(config=True)

    volume_driver_options = Dict(
        value_trait=Unicode(),
        default_value={},
        help="""Options of the volume driver for each of a user's volumes (home and services' data), e.g. the
        local driver's NFS options ``{"type": "nfs", "o": "addr=10.0.0.5,rw", "device": ":/exports/{volume}"}``.
        Values may use ``{volume}`` (the volume's name), ``{user}`` and ``{prefix}``. With the local driver,
        ``device`` must contain ``{volume}``; the directory below the part before the first field is made on first
        use. Declares the volumes shared. Checked when the hub starts.""",
    ).tag(config=True)

    swarm_assign_timeout = Float(
        60,
        min=1,
        help="""Seconds a new service's task may wait for a node before the spawn fails. A task no node can take
        (constraints nobody meets, reservations too large) fails at once with Swarm's reason; this bounds the rest.""",
    ).tag(config=True)

    # -- engine ---------------------------------------------------------------------------------------------------

    @property
    def backend(self) -> SwarmEngine:  # type: ignore[override]
        return SwarmEngine(
            self.gateway,
            hub_container=self.hub_container_name,
            stop_timeout=self.stop_timeout,
            encrypted_networks=self.swarm_encrypted_networks,
            placement=Placement(tuple(self.swarm_placement_constraints), tuple(self.swarm_placement_preferences)),
            volume_driver=self.volume_driver,
            volume_driver_options=self.volume_driver_options,
            assign_timeout=self.swarm_assign_timeout,
            owner=self.owner(),
        )

    def check_settings(self) -> None:
        super().check_settings()
        if not self.remove:
            raise ValueError(
                "c.MultiUserSwarmSpawner.remove must stay True: a Swarm service cannot be kept stopped, and files "
                "live on the volumes"
            )
        check_volume_driver_options(
            self.volume_driver, self.volume_driver_options, "c.MultiUserSwarmSpawner.volume_driver_options"
        )

    # -- names: Swarm refuses '.' ---------------------------------------------------------------------------------

    @default("object_name")
    def _object_name_default(self) -> str:
        name = super()._object_name_default()
        return names.swarm_name(name, "name_template") if name else name

    def _names_for(self, specs: list[services.ServiceSpec]) -> names.ResourceNames:
        return names.swarm_resource_names(super()._names_for(specs))

    # -- state: the node the server runs on -----------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self._node:
            state[STATE_NODE] = self._node
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self._node = state.get(STATE_NODE, "")

    def clear_state(self) -> None:
        super().clear_state()
        self._node = ""

    # -- the notebook ---------------------------------------------------------------------------------------------

    async def _prepare_home(
        self, resources: names.ResourceNames, image_info: dict[str, Any], image_user: str, progress: SpawnProgress
    ) -> None:
        """The home volume's record; the volume itself is made on the notebook's node by its task, and Docker's
        copy of the image's home directory into a new volume gives it to the image's user."""
        if not resources.home_volume:
            return
        owner = self.owner(server=self._home_server())
        volume = plan.VolumePlan(resources.home_volume, names.labels(names.ROLE_HOME, owner))
        _, created = await self.backend.ensure_volume(volume)
        self._home_created = created
        progress.stage("volume", f"{'Created' if created else 'Found'} home volume {resources.home_volume}")

    async def _notebook_stopped(self, error: WorkloadNotRunning) -> SpawnFailed:
        logs = (await self.backend.logs_tail(self.object_name)).strip() or "(no output)"
        return SpawnFailed(f"{error}. Its last log lines:\n{logs}")

    async def get_ip_and_port(self) -> tuple[str, int]:
        """The notebook task's address on the server's overlay, once the task runs."""
        backend = self.backend
        network = self._server_network(self.resource_names)
        deadline = time.monotonic() + self.start_timeout
        pauses = connect_intervals()
        while time.monotonic() < deadline:
            try:
                ip = await backend.address(self.object_name, network, self._started_at)
            except WorkloadNotRunning as e:
                raise await self._notebook_stopped(e) from e
            if ip:
                task = await backend.task_of(self.object_name)
                self._node = (task or {}).get("NodeID", "")
                return ip, self.port
            await asyncio.sleep(next(pauses))
        raise SpawnFailed(f"service {self.object_name} did not run in {self.start_timeout} s")

    async def _wait_until_listening(self, container: str, ip: str, port: int) -> bool:
        deadline = time.monotonic() + self.http_timeout
        pauses = connect_intervals()
        while time.monotonic() < deadline:
            if await accepts_tcp(ip, port):
                return True
            task = await self.gateway.tasks_view.latest(self.object_id, time.monotonic() - TASK_STATE_INTERVAL)
            failure = task_failure(task) if task is not None else ""
            if failure:
                raise await self._notebook_stopped(WorkloadNotRunning(f"service {container} stopped: {failure}"))
            await asyncio.sleep(next(pauses))
        return False

    async def _notebook_status(self) -> int | None:
        """From the shared task list (one request per interval for all servers): None while the notebook's task
        runs on a node that is up, else its exit code (0 when it is gone, 1 when its node is down)."""
        if not self.object_id:
            return 0
        task = await self.gateway.tasks_view.latest(self.object_id, not_older_than=self._started_at)
        if task is None:
            # not listed: rare (a service made after the snapshot), so ask about this one precisely
            if await self.gateway.inspect_service(self.object_id) is None:
                self.object_id = ""
                return 0
            task = latest_task(await self.gateway.tasks_of(self.object_id))
            if task is None:
                return None
        failure = task_failure(task)
        if failure:
            self.log.warning("Service %s of %s stopped: %s", self.object_name, self._log_name, failure)
            exit_code = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ExitCode")
            if exit_code == OOM_EXIT_CODE:
                await self._note_whether_oom_killed(task)
            return int(exit_code) if exit_code else (0 if task_state(task) == "complete" else 1)
        node = self.gateway.tasks_view.node(task.get("NodeID", ""))
        if node is not None and (node.get("Status") or {}).get("State") == "down":
            self.log.warning("Node %s of %s's server is down", node_name(node), self._log_name)
            return 1
        return None

    async def _note_whether_oom_killed(self, task: dict[str, Any]) -> None:
        """Ask the task's node whether its memory limit killed it (the manager only knows "exit code 137"), and
        keep the note as on one host. Asked once per container: the hub polls a stopped server until it stops it."""
        container = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID", "")
        if not container or container in self._oom_checked:
            return
        self._oom_checked = self._oom_checked | {container}
        job = oom_check_job(container, task.get("NodeID", ""), self.image, self.owner())
        try:
            exit_code, output = await run_job(self.gateway, job, OOM_CHECK_TIMEOUT)
        except DockerGatewayError as e:
            self.log.warning("Could not tell why %s's notebook stopped: %s", self._log_name, e)
            return
        if exit_code not in (OOM_KILLED, NOT_OOM_KILLED):
            self.log.warning("Could not tell why %s's notebook stopped: %s", self._log_name, output.strip())
            return
        limit = (((task.get("Spec") or {}).get("Resources") or {}).get("Limits") or {}).get("MemoryBytes") or 0
        self._note_why_it_stopped(
            {"Name": self.object_name, "State": {"OOMKilled": exit_code == OOM_KILLED}, "HostConfig": {"Memory": limit}}
        )

    async def _tear_down(self, resources: names.ResourceNames, timeout: int, notebook: bool = True) -> None:
        """The notebook's service goes too when only its services were asked to (its task has ended): a stopped
        service is of no use, and the network cannot be removed while a service refers to it."""
        await super()._tear_down(resources, timeout, notebook=True)

    async def delete_forever(self) -> None:
        """Remove the server's services and network and, with ``remove_volumes_on_delete``, its volumes: each on
        the node that holds it, by a short task there (a manager cannot reach a node's volumes), and then its
        record. Only this hub's objects of this user are touched (by hub and user identity labels), and a node's
        volume is removed only if its own labels say the same."""
        owner = self.owner()
        ours = [f"{names.LABEL_MANAGED}=true", f"{names.LABEL_HUB}={self.prefix}"]
        removed: list[str] = []
        for service in await self.gateway.list_services(ours):
            if self._is_this_servers(service["Spec"].get("Labels") or {}, owner):
                await self.backend.stop_workload(service["Spec"]["Name"], self.stop_timeout)
                removed.append(service["Spec"]["Name"])
        try:
            await self.backend.remove_network(self.resource_names.network)
        except DockerGatewayError as e:
            self.log.warning("Could not remove network of %s: %s", self._log_name, e)
        if self.remove_volumes_on_delete:
            records = [
                r
                for r in await self.gateway.list_records(ours)
                if self._is_this_servers(r["Spec"].get("Labels") or {}, owner)
            ]
            outcomes = await asyncio.gather(*(self._remove_volume(record, owner) for record in records))
            removed.extend(outcome for outcome in outcomes if outcome)
        self.log.info("Deleted %s: %s", self._log_name, ", ".join(removed) or "nothing was left")

    def _is_this_servers(self, labels: dict[str, str], owner: names.Owner) -> bool:
        # a named server's deletion leaves the user's home (labelled with no server) to the default one
        return names.claim_problem(labels, owner) is None and labels.get(names.LABEL_SERVER, "") == (self.name or "")

    async def _remove_volume(self, record: dict[str, Any], owner: names.Owner) -> str:
        """Remove a volume on its node, then its record; what was removed ("" when the volume had to stay, which
        the log says, naming the node, for an admin)."""
        volume = record["Spec"]["Name"]
        labels = record["Spec"].get("Labels") or {}
        node_id = labels.get(LABEL_NODE, "")
        if node_id:  # else no task ever made it, or it is on shared storage, which is the admin's to clear
            where = f"volume {volume} on node {labels.get(LABEL_NODE_NAME) or node_id}"
            try:
                await remove_volume_on_node(self.gateway, volume, node_id, self.image, owner)
            except DockerGatewayError as e:
                self.log.warning("Could not remove %s of %s: %s", where, self._log_name, e)
                return ""
        await self.gateway.remove_record(record["ID"])
        return f"volume {volume}" + (f" on node {labels.get(LABEL_NODE_NAME) or node_id}" if node_id else "")
