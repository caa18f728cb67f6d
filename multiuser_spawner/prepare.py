"""``multiuser-spawner prepare``: make a class's volumes before its first meeting.

A class's first spawn burst is the slowest: every student's home is created and chowned, and every database runs
its first initialisation at once. ``prepare`` does that work ahead of time, user by user, with each user's settings
resolved as the hub resolves them at spawn time (their groups' ``group_overrides``, then the default profile), by
the spawner's own code (:meth:`.MultiUserSpawner.prepare`): the next spawn finds the volumes and only starts.

Who is in the class comes from the hub's REST API (users and their groups); nothing here writes to the hub.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from traitlets.config import Config

#: What the token must be allowed to read: the members of a group, each user's groups and servers.
REQUIRED_SCOPES = ("read:groups", "read:users", "read:servers")


@dataclass(frozen=True)
class HubGroup:
    name: str


@dataclass(frozen=True)
class ClassMember:
    """The part of a hub user a spawner reads to resolve its settings; ``id`` is not in the REST API."""

    name: str
    groups: tuple[HubGroup, ...] = ()
    #: the default server is running, starting or stopping: its volumes are in use and are left alone
    running: bool = False
    id: int | None = None
    #: when the hub created the user (the REST API shows it): recorded on the volumes in place of the id
    created: datetime | None = None


@dataclass
class Outcome:
    user: str
    status: str  # "prepared", "skipped" or "failed"
    detail: str = ""


@dataclass
class Summary:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def failed(self) -> bool:
        return self.count("failed") > 0

    def line(self) -> str:
        return (
            f"{len(self.outcomes)} user(s): {self.count('prepared')} prepared, {self.count('skipped')} skipped, "
            f"{self.count('failed')} failed"
        )


def member_from_model(model: dict[str, Any]) -> ClassMember:
    """A hub user model (``GET /users/:name``) as the spawner needs it."""
    if "servers" not in model:
        # Without read:servers the hub leaves the key out; "not running" would be a guess that could clobber a
        # running server's services.
        raise ValueError(
            f"the hub did not show the servers of user {model.get('name')!r}: the token needs read:servers"
        )
    return ClassMember(
        name=model["name"],
        groups=tuple(HubGroup(g) for g in sorted(model.get("groups") or [])),
        running="" in (model.get("servers") or {}),
        created=_utc(model.get("created")),
    )


def _utc(timestamp: str | None) -> datetime | None:
    """The hub's ``2026-01-02T03:04:05.000006Z`` as the naive UTC datetime its database holds."""
    return datetime.fromisoformat(timestamp.removesuffix("Z")) if timestamp else None


def describe(prepared: Any) -> str:
    """One user's line of the summary, from a :class:`.PreparedServer`."""
    home = "home created" if prepared.home_created else "home found"
    services = ", ".join(prepared.services_initialised)
    return f"{home}; " + (f"initialised {services}" if services else "no service to initialise")


def progress_bar(done: int, total: int, width: int = 30) -> str:
    filled = width * done // total if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


async def prepare_members(
    members: Sequence[ClassMember],
    prepare_one: Callable[[ClassMember], Awaitable[str]],
    parallel: int,
    on_done: Callable[[Outcome, int, int], None],
) -> Summary:
    """Prepare ``members``, ``parallel`` at a time; a failure is reported for its user and the others go on."""
    summary = Summary()
    limit = asyncio.Semaphore(max(1, parallel))

    async def one(member: ClassMember) -> None:
        if member.running:
            outcome = Outcome(member.name, "skipped", "their server is running: its volumes are in use")
        else:
            async with limit:
                try:
                    outcome = Outcome(member.name, "prepared", await prepare_one(member))
                except Exception as e:  # one user's failure must not stop the class
                    outcome = Outcome(member.name, "failed", str(e) or type(e).__name__)
        summary.outcomes.append(outcome)
        on_done(outcome, len(summary.outcomes), len(members))

    await asyncio.gather(*(one(m) for m in members))
    summary.outcomes.sort(key=lambda o: o.user)
    return summary


def spawner_for(config: Config, member: ClassMember, spawner_class: type | None = None) -> Any:
    """A spawner for ``member``'s default server, configured from the hub's config as the hub would make it."""
    from .spawner import MultiUserSpawner

    cls = spawner_class or MultiUserSpawner
    return cls(user=member, name="", config=config)


async def prepare_member(config: Config, member: ClassMember) -> str:
    """Resolve ``member``'s settings as a spawn does (group overrides, then the default profile's), then prepare."""
    spawner = spawner_for(config, member)
    spawner.check_settings()
    await spawner.apply_group_overrides()
    # Then the user's options, as the hub does; an empty choice means the default profile.
    hook = spawner.apply_user_options
    if callable(hook):
        applied = hook(spawner, {})
        if inspect.isawaitable(applied):
            await applied
    return describe(await spawner.prepare())


def members_of(names_: Iterable[str], models: dict[str, dict[str, Any]]) -> list[ClassMember]:
    return [member_from_model(models[name]) for name in sorted(set(names_))]
