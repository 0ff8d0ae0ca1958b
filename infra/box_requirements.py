"""Print the box's Python requirements, one a line: the project's dependencies + the trainer extra.

    python infra/box_requirements.py [--pyproject pyproject.toml] [--only torch|--exclude torch]

Read from pyproject.toml with tomllib (Python >= 3.11; ``tomli`` on 3.10 when installed), so the
box installs exactly what the project declares. infra/bootstrap.sh uses it; no third-party
imports here, because it runs before anything is installed.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


def requirement_name(req: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def box_requirements(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    return [*project.get("dependencies", []), *project.get("optional-dependencies", {}).get("trainer", [])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pyproject", default="pyproject.toml")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--only", action="append", default=[], help="print only these packages")
    group.add_argument("--exclude", action="append", default=[], help="leave these packages out")
    args = parser.parse_args(argv)
    path = Path(args.pyproject)
    if not path.is_file():
        print(f"error: {path} not found; run from the project folder on the box (launcher run syncs it).", file=sys.stderr)
        return 2
    for req in box_requirements(path):
        name = requirement_name(req)
        if args.only and name not in args.only:
            continue
        if name in args.exclude:
            continue
        print(req)
    return 0


if __name__ == "__main__":
    sys.exit(main())
