"""Configuration: the example config is valid, and a bad setting stops a real hub at start, naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
from traitlets.config import Config

from hubstack import SINGLEUSER_IMAGE, HubStack
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


@pytest.mark.parametrize(
    ("setting", "template", "shared"),
    [
        ("name_template", "{prefix}-notebook", "one notebook container"),
        ("home_volume_name_template", "{prefix}-home{server_suffix}", "one home volume, and so their files"),
        ("network_name_template", "{prefix}{server_suffix}_net", "one private network"),
        ("service_container_name_template", "{prefix}_{service}", "each service's container"),
        ("service_volume_name_template", "{prefix}-{server}_{service}", "each service's data volume"),
        ("database_volume_name_template", "{prefix}-db", "one database volume"),
    ],
)
def test_a_name_template_without_the_user_is_refused(setting, template, shared):
    config = Config()
    config.MultiUserSpawner[setting] = template
    with pytest.raises(ValueError, match=rf"c\.MultiUserSpawner\.{setting}: .* has no {{user}} field") as refused:
        validate_config(config)
    assert shared in str(refused.value)


@pytest.mark.parametrize(
    ("setting", "template"),
    [
        ("name_template", "{prefix}-{username}"),  # DockerSpawner's own default, kept by hubs moving from it
        ("name_template", "nb-{user}{server_suffix}"),
        ("home_volume_name_template", "home-{user}"),
        ("home_volume_name_template", ""),  # no home volume at all
        ("service_volume_name_template", "{user}.{service}"),
    ],
)
def test_a_name_template_with_the_user_is_accepted(setting, template):
    config = Config()
    config.MultiUserSpawner[setting] = template
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


@pytest.mark.docker
def test_a_template_without_the_user_stops_the_hub_at_start(docker_client, tmp_path):
    hub = HubStack(
        workdir=tmp_path,
        prefix="tbadtmpl",
        users={"x": []},
        extra_config=(
            'c.MultiUserSpawner.home_volume_name_template = "{prefix}-home"\n'
            "from multiuser_spawner import validate_config\nvalidate_config(c)\n"
        ),
    )
    with pytest.raises(RuntimeError, match="hub exited") as failure:
        hub.start(timeout=30)
    assert "c.MultiUserSpawner.home_volume_name_template: template '{prefix}-home' has no {user} field" in str(
        failure.value
    )


@pytest.mark.docker
def test_a_profile_naming_an_image_alias_runs_its_image(make_hub, docker_client):
    hub = make_hub(
        {"ali": []},
        f"""
        c.MultiUserSpawner.allowed_images = {{"course": {SINGLEUSER_IMAGE!r}, "other": "multiuser-spawner/none:0"}}
        c.MultiUserSpawner.profiles = [
            {{"slug": "other", "default": True, "spawner_override": {{"image": "other"}}}},
            {{"slug": "course", "spawner_override": {{"image": "course"}}}},
        ]
        """,
    )
    hub.start_server("ali", {"profile": "course"})
    assert docker_client.containers.get(f"{hub.prefix}-ali").attrs["Config"]["Image"] == SINGLEUSER_IMAGE
