"""The local Docker engine as a :class:`~.backend.Backend`: each workload a container, the private network a
bridge, volumes local named volumes."""

from __future__ import annotations

from collections.abc import Mapping

from . import names, network
from .container_spec import container_from_workload
from .docker_gateway import DockerGateway, DockerGatewayError, WorkloadExited, ensure_ours, exit_reason, is_ours
from .plan import NetworkPlan, VolumePlan, Workload
from .startup import current_state


class WorkloadStopped(WorkloadExited):
    """A workload stopped while the spawn waited for it."""


class NotTheOwners(DockerGatewayError):
    """An object of ours under one of the owner's names belongs to another hub or another user."""


def check_claim(kind: str, name: str, found: Mapping[str, str] | None, owner: names.Owner) -> None:
    """Refuse an object found under ``name`` that the owner may not use (:func:`.names.claim_problem`)."""
    problem = names.claim_problem(found or {}, owner)
    if problem:
        raise NotTheOwners(
            f"the {kind} {name} cannot be used for user {owner.user!r}: {problem}. An admin must rename or "
            f"remove that {kind} (see 'Hub identity and renamed users' in the operations guide)"
        )


class LocalEngine:
    def __init__(
        self,
        gateway: DockerGateway,
        hub_container: str = "",
        address_pool: network.AddressPool | None = None,
        stop_timeout: int = 10,
        owner: names.Owner | None = None,
    ):
        #: whose objects this engine may touch by name; ``None``: any object with the project's label
        self.owner = owner
        self.gateway = gateway
        self.hub_container = hub_container
        self.address_pool = address_pool
        self.stop_timeout = stop_timeout

    async def ensure_network(self, plan: NetworkPlan) -> bool:
        existing = await self.gateway.inspect_network(plan.name)
        check_claim("network", plan.name, (existing or {}).get("Labels"), names.owner_from_labels(plan.labels))
        return await network.ensure_user_network(self.gateway, plan, self.address_pool)

    async def join_network(self, name: str) -> None:
        await network.join_hub(self.gateway, name, self.hub_container)

    async def remove_network(self, name: str) -> None:
        found = await self.gateway.inspect_network(name)
        if found is not None and self.claims(found):
            await network.remove_user_network(self.gateway, name, self.hub_container)

    async def ensure_volume(self, plan: VolumePlan) -> tuple[Mapping[str, str], bool]:
        info, created = await self.gateway.ensure_volume(plan.name, plan.labels)
        check_claim("volume", plan.name, info.get("Labels"), names.owner_from_labels(plan.labels))
        return info.get("Labels") or {}, created

    async def start_workload(self, workload: Workload) -> str:
        existing = await self.gateway.inspect_container(workload.name)
        if existing is not None:
            ensure_ours(existing)
            check_claim(
                "container", workload.name, existing["Config"].get("Labels"), names.owner_from_labels(workload.labels)
            )
            if existing["State"]["Running"]:
                # Left running by a hub that died, or by a notebook that died without a stop: a database killed
                # here would have to recover from its log, so it gets its clean shutdown first.
                await self.gateway.stop_container(existing["Id"], self.stop_timeout)
            await self.gateway.remove_container(existing["Id"])
        container_id = await self.gateway.create_container(container_from_workload(workload))
        await self.gateway.start_container(container_id)
        return container_id

    async def stop_workload(self, name: str, timeout: int, remove: bool = False) -> None:
        info = await self._ours(name)
        if info is not None:
            await self.gateway.stop_container(info["Id"], timeout)
            if remove:
                await self.gateway.remove_container(info["Id"])

    async def remove_workload(self, name: str) -> None:
        info = await self._ours(name)
        if info is not None:
            await self.gateway.remove_container(info["Id"])

    async def _ours(self, name: str) -> dict | None:
        """The container of that name if it carries our label (and is the owner's): a stranger, or another hub's
        or user's container under our name, is never touched."""
        info = await self.gateway.inspect_container(name)
        return info if info is not None and self.claims(info) else None

    def claims(self, info: dict) -> bool:
        """Whether an inspected object carries our label and (when the engine has an owner) is the owner's."""
        if not is_ours(info):
            return False
        found = info.get("Labels") or (info.get("Config") or {}).get("Labels") or {}
        return self.owner is None or names.claim_problem(found, self.owner) is None

    async def address(self, name: str, network_name: str, since: float) -> str:
        running, info = await current_state(self.gateway, name, since)
        if not running:
            state = (info or {}).get("State") or {}
            raise WorkloadStopped(f"container {name} stopped ({exit_reason(state)})", state)
        networks = info["NetworkSettings"].get("Networks") or {}
        return (networks.get(network_name) or {}).get("IPAddress", "")

    async def run_inside(self, name: str, command: list[str]) -> tuple[int, str]:
        return await self.gateway.exec_run(name, command)

    async def logs_tail(self, name: str, lines: int = 20) -> str:
        return await self.gateway.logs_tail(name, lines)
