"""Print the box's Python requirements, one a line: the project's dependencies + the trainer extra
(+ the extras named with --extras: ``eval`` when the run writes a report card).

    python infra/box_requirements.py [--pyproject pyproject.toml] [--extras trainer,eval] [--only torch|--exclude torch]
    python infra/box_requirements.py --check-torch 2.4.0+cu124   # exit 3 with one line: below the floor

Read from pyproject.toml with tomllib (Python >= 3.11; on 3.10 ``tomli``, or the copy pip vendors,
which every venv has), so the box installs exactly what the project declares. The supported
range is declared there once: ``requires-python`` and the trainer extra's ``torch>=X.Y``.
infra/bootstrap.sh uses it; no third-party imports here, because it runs before anything is
installed.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        from pip._vendor import tomli as tomllib  # type: ignore[no-redef]


def requirement_name(req: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _project(pyproject: Path) -> dict:
    return tomllib.loads(pyproject.read_text())["project"]


BOX_EXTRAS = ("trainer",)  # what every box installs; more are asked for by name


def box_requirements(pyproject: Path, extras: tuple[str, ...] = BOX_EXTRAS) -> list[str]:
    project = _project(pyproject)
    declared = project.get("optional-dependencies", {})
    unknown = [name for name in extras if name not in declared]
    if unknown:
        raise SystemExit(f"error: {pyproject} declares no extra {', '.join(unknown)} (it has {', '.join(sorted(declared))})")
    reqs = list(project.get("dependencies", []))
    for name in dict.fromkeys((*BOX_EXTRAS, *extras)):
        reqs += [req for req in declared[name] if req not in reqs]
    return reqs


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: "2.4.0+cu124" -> (2, 4, 0); "2.5.0a0" -> (2, 5, 0)."""
    return tuple(int(re.match(r"\d+", part).group()) for part in version.split("+")[0].split(".")[:3] if re.match(r"\d+", part))


def supported_range(pyproject: Path) -> tuple[str, str]:
    """The oldest supported Python and torch, as declared: (``requires-python``'s floor, the torch floor)."""
    project = _project(pyproject)
    python = re.fullmatch(r">=\s*([\d.]+)", project["requires-python"].strip())
    torch = next((re.search(r">=\s*([\d.]+)", req) for req in box_requirements(pyproject) if requirement_name(req) == "torch"), None)
    if not python or not torch:
        raise SystemExit(f"error: {pyproject} must declare requires-python '>=X.Y' and the trainer extra 'torch>=X.Y'")
    return python.group(1), torch.group(1)


def torch_refusal(pyproject: Path, installed: str) -> str | None:
    """One line saying why an image's torch ``installed`` is refused, or None when it is supported."""
    floor = supported_range(pyproject)[1]
    if release(installed) >= release(floor):
        return None
    return (f"bootstrap: error: this image's torch is {installed}; the trainer needs torch >= {floor}. "
            f"Choose an image with torch >= {floor} (box.runpod.image / box.vastai.image); nothing was installed.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pyproject", default="pyproject.toml")
    parser.add_argument("--extras", default=",".join(BOX_EXTRAS), help="extras to install besides the base (comma-separated; trainer always)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--only", action="append", default=[], help="print only these packages")
    group.add_argument("--exclude", action="append", default=[], help="leave these packages out")
    group.add_argument("--check-torch", metavar="VERSION", help="exit 3 with one line if VERSION is below the torch floor")
    group.add_argument("--range", action="store_true", help="print the oldest supported Python and torch")
    args = parser.parse_args(argv)
    path = Path(args.pyproject)
    if not path.is_file():
        print(f"error: {path} not found; run from the project folder on the box (launcher run syncs it).", file=sys.stderr)
        return 2
    if args.check_torch:
        refusal = torch_refusal(path, args.check_torch)
        if refusal:
            print(refusal, file=sys.stderr)
            return 3
        return 0
    if args.range:
        print(*supported_range(path))
        return 0
    extras = tuple(name.strip() for name in args.extras.split(",") if name.strip())
    for req in box_requirements(path, extras):
        name = requirement_name(req)
        if args.only and name not in args.only:
            continue
        if name in args.exclude:
            continue
        print(req)
    return 0


if __name__ == "__main__":
    sys.exit(main())
