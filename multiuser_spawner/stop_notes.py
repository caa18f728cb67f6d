"""Why a server stopped when nobody asked it to: its notebook was killed by its memory limit.

A student whose notebook vanishes mid-lesson deserves to know why. The hub's poll reads it from the notebook
container's state (Docker's ``State.OOMKilled``), keeps it in the server's state (so a hub restart does not lose
it), logs it, and tells the user as the first progress message of their next spawn; ``multiuser-spawner ls``
shows it beside the stopped container. Everything here is pure, except :func:`annotate_containers`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import inventory, names

REASON_OOM_KILLED = "oom-killed"
MIB = 2**20
GIB = 2**30


@dataclass(frozen=True)
class StopNote:
    """Why the server in ``container`` stopped: only ``oom-killed`` so far."""

    reason: str
    container: str
    #: the container's memory limit in bytes; 0 when it had none or Docker did not say
    mem_limit: int = 0

    def as_state(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: Mapping[str, Any] | None) -> StopNote | None:
        """The note kept in the server's state; ``None`` for none, or one this release cannot read."""
        if not isinstance(state, Mapping) or state.get("reason") != REASON_OOM_KILLED:
            return None
        try:
            return cls(REASON_OOM_KILLED, str(state.get("container", "")), int(state.get("mem_limit") or 0))
        except (TypeError, ValueError):
            return None

    @property
    def short(self) -> str:
        """For the admin's table: ``oom-killed (512M)``."""
        return f"{self.reason} ({docker_size(self.mem_limit)})" if self.mem_limit else self.reason

    def user_message(self) -> str:
        """What the user reads on the spawn page of their next start."""
        limit = f"its {human_size(self.mem_limit)} memory limit" if self.mem_limit else "its memory limit"
        return (
            f"Your last server was stopped because it used more than {limit}: the work saved in your files is "
            "kept, what was only in the memory of its notebooks was lost."
        )

    def log_message(self, username: str) -> str:
        """For the hub's log: the container, the limit and the user."""
        limit = f" ({human_size(self.mem_limit)})" if self.mem_limit else ""
        return f"Container {self.container} was killed by its memory limit{limit}: the server of {username} stopped"


def from_container(info: Mapping[str, Any]) -> StopNote | None:
    """The note for a stopped container, from ``docker inspect``; ``None`` when it runs or was not OOM-killed."""
    state = info.get("State") or {}
    if state.get("Running") or not state.get("OOMKilled"):
        return None
    limit = int((info.get("HostConfig") or {}).get("Memory") or 0)
    return StopNote(REASON_OOM_KILLED, str(info.get("Name", "")).lstrip("/"), limit)


def docker_size(size: int) -> str:
    """Bytes as Docker's limits are written: ``512M``, ``1G``; other amounts in whole MiB."""
    if size and size % GIB == 0:
        return f"{size // GIB}G"
    return f"{round(size / MIB)}M"


def human_size(size: int) -> str:
    """Bytes as a user reads a limit: ``512 MB``, ``1 GB`` (the ``M`` and ``G`` of Docker's limits)."""
    if size and size % GIB == 0:
        return f"{size // GIB} GB"
    return f"{round(size / MIB)} MB"


async def annotate_containers(gateway: Any, resources: list[inventory.Resource]) -> list[inventory.Resource]:
    """``resources`` with a note on each stopped notebook container that was OOM-killed. The container list does
    not say it, so each stopped notebook (few: the hub replaces them at the next start) is inspected."""

    async def annotate(resource: inventory.Resource) -> inventory.Resource:
        if resource.kind != inventory.KIND_CONTAINER or resource.role != names.ROLE_NOTEBOOK:
            return resource
        if resource.state == "running":
            return resource
        info = await gateway.inspect_container(resource.id)
        note = from_container(info) if info is not None else None
        return dataclasses.replace(resource, note=note.short) if note else resource

    return list(await asyncio.gather(*(annotate(r) for r in resources)))
