"""The seam between the orchestration and an engine: what the spawner asks of whatever runs a server's plan.

:class:`~.local.LocalEngine` runs it as containers on one Docker host. A backend for many hosts implements the same
methods with its own objects; the spawner does not change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from .plan import NetworkPlan, VolumePlan, Workload


class Backend(Protocol):
    async def ensure_network(self, plan: NetworkPlan) -> bool:
        """Make the private network if it is missing (refusing one of that name that is not ours); True when new."""

    async def join_network(self, name: str) -> None:
        """Connect the hub's container (when the hub runs in one) to the network, so that the hub reaches what
        runs on it. Apart from :meth:`ensure_network`, so that a spawn starts its workloads meanwhile."""

    async def remove_network(self, name: str) -> None:
        """Remove the network if it is ours; its workloads must be gone."""

    async def ensure_volume(self, plan: VolumePlan) -> tuple[Mapping[str, str], bool]:
        """The volume's labels (an existing volume keeps its own), and whether it was made now."""

    async def start_workload(self, workload: Workload) -> str:
        """Run ``workload``, replacing one of ours left under its name (stopped cleanly first); return its id."""

    async def stop_workload(self, name: str, timeout: int, remove: bool = False) -> None:
        """Stop it (if it exists and is ours), giving it ``timeout`` seconds after the stop signal; then remove it
        if ``remove``. Its volumes stay."""

    async def remove_workload(self, name: str) -> None:
        """Remove it at once (no clean stop) if it exists and is ours; its volumes stay."""

    async def address(self, name: str, network: str, since: float) -> str:
        """Its address on ``network`` while it runs ("" before it has one); raise if it stopped after ``since``."""

    async def run_inside(self, name: str, command: list[str]) -> tuple[int, str]:
        """Run ``command`` in it; its exit code and output."""

    async def logs_tail(self, name: str, lines: int = 20) -> str:
        """Its last log lines ("" if it has none)."""
