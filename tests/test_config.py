"""Configuration: the example config is valid, and a bad setting stops a real hub at start, naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
from traitlets.config import Config

from hubstack import HubStack
from multiuser_spawner import validate_config

EXAMPLE = Path(__file__).parent.parent / "jupyterhub_config.py"


def test_example_config_loads_and_validates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # it keeps its state in ./.demo
    config = Config()
    exec(compile(EXAMPLE.read_text(), str(EXAMPLE), "exec"), {"get_config": lambda: config})
    assert config.JupyterHub.spawner_class == "multiuser"
    overrides = config.MultiUserSpawner.group_overrides
    assert [o["spawner_override"]["mem_limit"] for o in overrides.values()] == ["512M", "1G"]


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("prefix", "Bad_Prefix", "c.MultiUserSpawner.prefix"),
        ("home_volume_name_template", "{prefix}-{nope}", "home_volume_name_template"),
        ("profiles", [{"slug": "x", "groups": "staff"}], r"profiles\[0\] \('x'\): field 'groups'"),
        ("mem_limit", "lots", "mem_limit"),
    ],
)
def test_bad_settings_are_named(setting, value, message):
    config = Config()
    config.MultiUserSpawner[setting] = value
    with pytest.raises(Exception, match=message):
        validate_config(config)


@pytest.mark.docker
def test_bad_setting_stops_the_hub_at_start(docker_client, tmp_path):
    hub = HubStack(
        workdir=tmp_path,
        prefix="tbadconf",
        users={"x": []},
        extra_config=(
            'c.MultiUserSpawner.profiles = [{"slug": "Big One"}]\n'
            "from multiuser_spawner import validate_config\nvalidate_config(c)\n"
        ),
    )
    with pytest.raises(RuntimeError, match="hub exited") as failure:
        hub.start(timeout=30)
    assert "profiles[0] ('Big One'): field 'slug'" in str(failure.value)
