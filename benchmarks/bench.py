"""Start-burst, stop and polling benchmark: raw Docker, DockerSpawner and MultiUserSpawner on this machine.

    .venv/bin/python benchmarks/bench.py [--sizes 1,10,20] [--json out.json] [--poll-servers 100]

The measurement lives in the package beside this file, ``mus_bench`` (its docstring lists what each module
measures); ``python -m mus_bench`` from this folder runs the same. See docs/benchmarks.md.
"""

import sys

from mus_bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
