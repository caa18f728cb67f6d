"""Print pip constraints that pin every runtime dependency to the lowest version pyproject.toml allows.

    python scripts/lowest_constraints.py [pyproject.toml] > constraints.txt

The bounds are read, not copied, so the versions the tests run against are the versions the package claims. A
dependency without a ``>=`` (or ``==``, ``~=``) lower bound is an error: its lowest allowed version is whatever is
oldest on the index, a claim nobody tests. Needs ``packaging`` (run it with the project's venv).
"""

from __future__ import annotations

import sys
from pathlib import Path

from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the copy pip carries
    from pip._vendor import tomli as tomllib

LOWER_BOUND_OPERATORS = (">=", "==", "~=")


def lowest_pin(requirement: str) -> str:
    """``name==version`` for a requirement's lower bound: ``jupyterhub>=5.3`` gives ``jupyterhub==5.3``."""
    parsed = Requirement(requirement)
    bounds = [spec.version for spec in parsed.specifier if spec.operator in LOWER_BOUND_OPERATORS]
    if len(bounds) != 1:
        raise ValueError(f"dependency {requirement!r} needs exactly one lower bound (>=, == or ~=) to be tested")
    return f"{parsed.name}=={bounds[0]}"


def main(argv: list[str]) -> int:
    path = Path(argv[0] if argv else "pyproject.toml")
    dependencies = tomllib.loads(path.read_text())["project"]["dependencies"]
    try:
        pins = [lowest_pin(requirement) for requirement in dependencies]
    except ValueError as e:
        print(f"{path}: {e}", file=sys.stderr)
        return 1
    print("\n".join(pins))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
