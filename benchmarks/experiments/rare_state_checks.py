# Experiment: append to the MultiUserSpawner hubs' configuration with
#   benchmarks/bench.py --multiuser-config-file benchmarks/experiments/rare_state_checks.py
# While a server starts, the spawner checks that its container still runs (one inspect request) every 0.5 s,
# besides trying to connect every 0.1 s. This checks every 5 s instead, to show what those inspects cost a burst.
# It sets a module constant of multiuser_spawner.startup, so it only works while that constant exists.
from multiuser_spawner import startup as _startup

assert hasattr(_startup, "STATE_CHECK_INTERVAL"), "multiuser_spawner.startup changed: this experiment is out of date"
_startup.STATE_CHECK_INTERVAL = 5.0
