# Experiment: append to the MultiUserSpawner hubs' configuration with
#   benchmarks/bench.py --multiuser-config-file benchmarks/experiments/no_home_ownership_fix.py
# A new home volume is not handed to the image's user by a one-shot helper container. With this image that is
# safe: /home/jovyan exists in it, owned by jovyan, and Docker copies it (ownership included) into a new, empty
# named volume on first mount. Shows what the helper container costs a first spawn.
c = get_config()  # noqa: F821
c.MultiUserSpawner.fix_home_ownership = False
