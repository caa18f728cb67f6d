"""Start-burst, stop and polling benchmark: raw Docker, DockerSpawner and MultiUserSpawner on this machine.

    .venv/bin/python benchmarks/bench.py [--sizes 1,10,20] [--json out.json] [--poll-servers 100]

For each burst size N and each server kind (``jupyter``: the image's own ``jupyterhub-singleuser``; ``light``: a
tiny HTTP server from the same image, which takes the CPU-heavy Jupyter start-up out of the picture), one run
measures:

- ``floor``: N containers started at once with docker-py (same image, command, environment, limits and a named
  volume each), ready when the server answers the request the hub itself makes to decide a server is up;
- ``pair-floor`` and ``services-floor``: the same, each notebook on a private network with, beside it, a database
  (``pair-floor``) or a database, a cache and a queue (``services-floor``), ready when all of them are;
- ``docker``: stock DockerSpawner behind a real hub: N ``POST /users/{name}/server`` at once, ready when the hub
  reports the server ready; then N ``DELETE`` at once, done when the hub reports each server gone;
- ``multiuser``, ``multiuser-db`` and ``multiuser-services``: the same with MultiUserSpawner, without and with its
  per-user database, and with its per-user services;

once per N, ``db-floor``: N database containers started at once with docker-py, ready when ``pg_isready`` succeeds;
and what ``poll()`` costs with many running servers (Docker requests and CPU per poll interval). On request
(``--scenarios swarm-...``), the same bursts on the test swarm: ``swarm-floor`` (``docker service create`` of the
same specs, no hub), ``swarm-docker`` (DockerSpawner's SwarmSpawner) and ``swarm-multiuser`` (MultiUserSwarmSpawner).

It prints the results, checks the targets and optionally writes every number as JSON. Every Docker object it makes
is named ``bench-<run id>-...`` and removed at the end, whatever happens. See docs/benchmarks.md.

The modules, by what they measure or provide:

- ``scenarios``: the scenario names, server kinds, images, limits, users, and releasing a burst at once;
- ``services``: the containers beside a notebook (database, cache, queue): images, settings, limits, readiness;
- ``probes``: the readiness checks the floors make from the host (HTTP, Postgres, Redis, AMQP);
- ``containers``: the benchmark's Docker objects: listing and removing them, their timelines from the engine;
- ``machine``: CPU accounting, waiting for a quiet machine, what machine and source a run measured;
- ``floors``: the raw-Docker floors (``floor``, ``pair-floor``, ``services-floor``, ``db-floor``);
- ``hubs``: the spawners behind real hubs (``docker``, ``multiuser``, ``multiuser-db``, ``multiuser-services``);
- ``polling``: what ``poll()`` costs with many running servers;
- ``swarm``: the Swarm scenarios (floor and hubs on the test swarm), their CPU accounting and clean-up;
- ``passes``: attempts, repeats and passes over the scenarios of one size;
- ``results``: one burst's numbers, the targets and the tables;
- ``cli``: the command line, the printed report and the JSON file.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The test harness (a real hub, and the images' names) lives in tests/hubstack.py.
sys.path.insert(0, str(ROOT / "tests"))
