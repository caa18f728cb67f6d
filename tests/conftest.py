"""Fixtures for the real stack: a Docker engine, the test images, and hubs run as subprocesses.

Docker-backed tests fail (never skip) when CI is set and Docker or the images are missing: a suite that silently
skips its real part is a broken suite.
"""

from __future__ import annotations

import os
import secrets
import shutil

import docker
import pytest
from swarmstack import cluster, swarm, swarm_stack, workers  # noqa: F401  (the test swarm's fixtures, for every module)

from hubstack import POSTGRES_IMAGE, SINGLEUSER_IMAGE, HubStack, cleanup_prefix, dump_logs

IN_CI = bool(os.environ.get("CI"))


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"{reason} (CI is set: Docker-backed tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:
        _unavailable(f"no Docker engine: {e}")
    for image in (SINGLEUSER_IMAGE, POSTGRES_IMAGE):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            _unavailable(f"test image {image} is missing: run images/build.sh")
    if shutil.which("configurable-http-proxy") is None:
        _unavailable("configurable-http-proxy is not installed (npm install -g configurable-http-proxy)")
    return client


def new_prefix() -> str:
    """A name prefix of its own per hub, so tests never see (or clean up) each other's objects."""
    return "t" + secrets.token_hex(4)


@pytest.fixture(scope="module")
def make_hub(docker_client, tmp_path_factory, request):
    """Build and start hubs; every hub is stopped and its Docker objects removed at the end of the module."""
    hubs: list[HubStack] = []

    def make(users: dict[str, list[str]], extra_config: str = "") -> HubStack:
        hub = HubStack(
            workdir=tmp_path_factory.mktemp("hub"), prefix=new_prefix(), users=users, extra_config=extra_config
        )
        hubs.append(hub)
        hub.start()
        return hub

    yield make
    for hub in hubs:
        hub.stop()
        cleanup_prefix(docker_client, hub.prefix)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    hub = item.funcargs.get("hub")
    client = item.funcargs.get("docker_client")
    if isinstance(hub, HubStack) and client is not None:
        report.sections.append(("container logs", dump_logs(client, hub.prefix)))
        report.sections.append(("hub log", hub.log_tail(80)))
