"""The pure parts of ``multiuser-spawner prepare``: who is in the class, and how their outcomes are reported."""

from __future__ import annotations

import asyncio

import pytest

from multiuser_spawner import prepare


def test_a_user_model_becomes_a_member_with_their_groups_and_whether_their_server_runs():
    model = {"name": "ann", "groups": ["staff", "students"], "servers": {"": {"ready": True}, "extra": {}}}
    assert prepare.member_from_model(model) == prepare.ClassMember(
        "ann", (prepare.HubGroup("staff"), prepare.HubGroup("students")), running=True
    )
    # a named server does not hold the default server's volumes
    assert not prepare.member_from_model({"name": "bo", "groups": [], "servers": {"extra": {}}}).running


def test_a_model_without_servers_is_refused_rather_than_taken_for_stopped():
    with pytest.raises(ValueError, match="read:servers"):
        prepare.member_from_model({"name": "ann", "groups": []})


def test_progress_bar():
    assert prepare.progress_bar(0, 4, width=8) == "[........] 0/4"
    assert prepare.progress_bar(1, 4, width=8) == "[##......] 1/4"
    assert prepare.progress_bar(4, 4, width=8) == "[########] 4/4"


def test_running_users_are_skipped_and_one_failure_does_not_stop_the_class():
    members = [
        prepare.ClassMember("cat"),
        prepare.ClassMember("ann", running=True),
        prepare.ClassMember("bo"),
    ]
    prepared: list[str] = []
    seen: list[tuple[str, int, int]] = []

    async def prepare_one(member: prepare.ClassMember) -> str:
        if member.name == "bo":
            raise RuntimeError("image multiuser-spawner/postgres:15 is not on this Docker host")
        prepared.append(member.name)
        return "home created"

    summary = asyncio.run(
        prepare.prepare_members(members, prepare_one, 2, lambda o, done, total: seen.append((o.user, done, total)))
    )
    assert prepared == ["cat"]
    assert [(o.user, o.status) for o in summary.outcomes] == [("ann", "skipped"), ("bo", "failed"), ("cat", "prepared")]
    assert summary.outcomes[1].detail == "image multiuser-spawner/postgres:15 is not on this Docker host"
    assert summary.failed
    assert summary.line() == "3 user(s): 1 prepared, 1 skipped, 1 failed"
    assert sorted(done for _, done, _ in seen) == [1, 2, 3] and {total for *_, total in seen} == {3}


def test_describe():
    assert prepare.describe(type("P", (), {"home_created": True, "services_initialised": ("cache", "db")})) == (
        "home created; initialised cache, db"
    )
