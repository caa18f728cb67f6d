"""The user is told why their server stopped: a notebook killed by its memory limit is named in the hub's log, in
``multiuser-spawner ls``, and on the user's next spawn, even after a hub restart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from hubstack import exec_in, notebook, wait_until
from multiuser_spawner import inventory, names, stop_notes

CLI = str(Path(sys.executable).with_name("multiuser-spawner"))
MESSAGE = "Your last server was stopped because it used more than its 200 MB memory limit"

# -- the note, on literal values ----------------------------------------------------------------------------------


def inspected(oom_killed: bool, running: bool = False, memory: int = 200 * 2**20) -> dict:
    return {
        "Name": "/jupyter-tiny",
        "State": {"Running": running, "OOMKilled": oom_killed, "ExitCode": 137},
        "HostConfig": {"Memory": memory},
    }


def test_a_container_killed_by_its_limit_gets_a_note_naming_the_limit():
    note = stop_notes.from_container(inspected(oom_killed=True))
    assert note == stop_notes.StopNote("oom-killed", "jupyter-tiny", 200 * 2**20)
    assert note.short == "oom-killed (200M)"
    assert note.user_message().startswith(MESSAGE)
    assert note.log_message("tiny") == (
        "Container jupyter-tiny was killed by its memory limit (200 MB): the server of tiny stopped"
    )
    assert stop_notes.StopNote.from_state(note.as_state()) == note


@pytest.mark.parametrize(("oom_killed", "running"), [(False, False), (True, True)])
def test_a_crash_or_a_running_container_gets_no_note(oom_killed, running):
    # exit code 137 alone may be a `docker kill`: only Docker's OOMKilled flag tells the memory limit did it
    assert stop_notes.from_container(inspected(oom_killed, running)) is None


def test_limits_read_as_they_were_written():
    assert [stop_notes.docker_size(n) for n in (512 * 2**20, 2**30, 1536 * 2**20)] == ["512M", "1G", "1536M"]
    assert stop_notes.human_size(2 * 2**30) == "2 GB"
    assert (
        stop_notes.StopNote("oom-killed", "c")
        .user_message()
        .startswith("Your last server was stopped because it used more than its memory limit")
    )


@pytest.mark.parametrize("state", [None, {}, {"reason": "martians"}, {"reason": "oom-killed", "mem_limit": "x"}])
def test_an_unreadable_state_is_no_note(state):
    assert stop_notes.StopNote.from_state(state) is None


def test_ls_shows_the_note_in_the_state_column_and_in_json():
    from multiuser_spawner import cli

    resource = inventory.Resource(
        "container", "jupyter-tiny", "id1", "tiny", "", names.ROLE_NOTEBOOK, state="exited", note="oom-killed (200M)"
    )
    assert cli.ls_rows([resource])[0][5] == "exited: oom-killed (200M)"
    item = inventory.as_json([resource])["users"][0]["servers"][0]["containers"][0]
    assert item["note"] == "oom-killed (200M)"


# -- the real stack -------------------------------------------------------------------------------------------------

CONFIG = """
c.Spawner.poll_interval = 2
# the spawn request returns at once, so the progress stream is read from the spawn's first event
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}
c.MultiUserSpawner.group_overrides = {"1-small": {"groups": ["small"], "spawner_override": {"mem_limit": "200M"}}}
"""


# Make the server itself the OOM killer's first choice (raising one's own score needs no privilege; the pattern does
# not match this shell's own command line, whose children would inherit the score), then go past 200M.
EXHAUST_MEMORY = (
    'for p in /proc/[0-9]*; do grep -q "jupyterhub-single[u]ser" $p/cmdline 2>/dev/null'
    " && echo 1000 > $p/oom_score_adj; done; python3 -c 'x = bytearray(150 * 2**20); y = bytearray(150 * 2**20)'"
)


def exhaust_memory(container) -> None:
    exec_in(container, EXHAUST_MEMORY)


def spawn_messages(hub, name: str, timeout: float = 180) -> list[str]:
    """Start the server and return every progress message up to the ready event."""
    r = hub.request("POST", f"/users/{name}/server", json={})
    assert r.status_code == 202, (r.status_code, r.text)
    url = f"{hub.api}/users/{name}/server/progress"
    messages = []
    with requests.get(url, headers={"Authorization": f"token {hub.token}"}, stream=True, timeout=timeout) as stream:
        for line in stream.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[5:])
                messages.append(event.get("message", ""))
                if event.get("ready") or event.get("failed"):
                    return messages
    raise AssertionError(f"progress stream ended before the server was ready: {messages}")


@pytest.mark.docker
def test_a_user_whose_notebook_ran_out_of_memory_is_told_so(make_hub, docker_client):
    hub = make_hub({"tiny": ["small"]}, CONFIG)
    hub.start_server("tiny")
    exhaust_memory(notebook(docker_client, hub, "tiny"))
    wait_until(lambda: hub.user("tiny")["servers"] == {}, 90, "the hub to see the server stop")

    # the hub's log names the container, its limit and the user, once
    logged = f"Container {hub.prefix}-tiny was killed by its memory limit (200 MB): the server of tiny stopped"
    assert hub.log_path.read_text().count(logged) == 1

    # the admin's ls shows the stopped notebook and why
    listed = subprocess.run(
        [CLI, "ls", "--prefix", hub.prefix, "--no-sizes"], capture_output=True, text=True, timeout=120, check=True
    )
    row = next(line for line in listed.stdout.splitlines() if f" {hub.prefix}-tiny " in line)
    assert "notebook" in row and "exited: oom-killed (200M)" in row, listed.stdout

    # the note is kept in the server's state: a hub restart before the user comes back does not lose it
    hub.restart()
    messages = spawn_messages(hub, "tiny")
    # the first message of the spawn itself, after the hub's own "Server requested"
    assert messages[0] == "Server requested" and messages[1].startswith(MESSAGE), messages
    hub.wait_ready("tiny")

    # told once: the start after a normal stop says nothing of it
    hub.stop_server("tiny")
    assert not any(MESSAGE in m for m in spawn_messages(hub, "tiny")), "told again after a normal stop"
    hub.stop_server("tiny")
