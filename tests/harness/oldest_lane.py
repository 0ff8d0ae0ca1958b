"""CI's oldest lane (issue 22): the product's own path on the oldest supported box image.

    python3 -m tests.harness.oldest_lane [--python 3.11]   # default: pyproject's floors

1. the simulated image: pyenv's Python at requires-python's floor with the torch floor from the
   registry, nothing else (tests/harness/image_python.py, built once and kept);
2. infra/bootstrap.sh on it, in a copy of the project kept beside the image: it must keep the
   image's torch (the venv's torch is the image's, no torch or nvidia package installed) and
   say MB and seconds. Its own stamp (requirements, interpreter, script) makes a later run with
   the same inputs a no-op, so a warm lane costs the tests only; any change to them bootstraps
   again from scratch;
3. the test tools into that venv under bootstrap's own constraint file;
4. the trainer's tests of train, resume, benchmark, eval and export with that venv's Python.
Exit non-zero on any failure; each phase prints its time.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.harness.image_python import IMAGE_ROOT, ensure_image_python, exact_release
from tests.harness.paths import REPO, box_requirements

TEST_TOOLS = ["pytest>=8.0", "pytest-timeout>=2.3"]
TRAINER_TESTS = [
    "tests/trainer/test_oldest_torch_api.py",
    "tests/trainer/test_model.py",
    "tests/trainer/test_train.py",
    "tests/trainer/test_checkpoint_resume.py",
    "tests/trainer/bench/test_benchmark_cost.py",
    "tests/trainer/evaluation/test_eval_export.py",
]


def phase(name: str, started: float) -> None:
    print(f"oldest lane: {name} took {time.monotonic() - started:.0f} s", flush=True)


def copy_project(dest: Path) -> None:
    """The files git knows (tracked and untracked, not ignored), as `launcher run` syncs them;
    anything else in ``dest`` but its .venv is removed."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                           capture_output=True).stdout.decode().split("\0")
    with tempfile.TemporaryDirectory() as fresh:
        subprocess.run(["rsync", "-a", "--files-from=-", "--from0", f"{REPO}/", f"{fresh}/"],
                       input="\0".join(f for f in files if f and (REPO / f).exists()).encode(), check=True)
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run(["rsync", "-a", "--delete", "--exclude=/.venv", f"{fresh}/", f"{dest}/"], check=True)


def check_bootstrap(output: str, image_torch: str, image_base: Path, venv_python: Path) -> list[str]:
    """What a bootstrap on a supported image must show; the problems found."""
    problems = [] if "bootstrap: .venv is up to date" in output else bootstrap_report_problems(output, image_torch)
    where = subprocess.run([str(venv_python), "-c", "import importlib.metadata as m, torch; print(m.version('torch'), torch.__file__)"],
                           capture_output=True, text=True).stdout.split()
    if where[:1] != [image_torch] or not where[1:] or not where[1].startswith(str(image_base)):
        problems.append(f"the venv's torch is {' '.join(where) or 'missing'}, not the image's {image_torch} from {image_base}")
    return problems


def bootstrap_report_problems(output: str, image_torch: str) -> list[str]:
    """A bootstrap that did the work: it says it kept the torch, installed none, and its MB and seconds."""
    problems = []
    if "keeping" not in output or image_torch not in output:
        problems.append(f"bootstrap did not say it kept torch {image_torch}")
    installed = next((line for line in output.splitlines() if line.startswith("bootstrap: installed into")), "")
    heavy = [name for name in installed.split(":", 2)[-1].split() if re.match(r"(torch|nvidia|triton)[-_]", name.lower())]
    if not installed or heavy:
        problems.append(f"bootstrap installed {heavy or 'nothing it listed'}: the image's torch must be kept")
    if not re.search(r"^bootstrap: fetched \d+ MB .* in \d+ s$", output, re.M):
        problems.append("bootstrap did not say how many MB it fetched and how long it took")
    return problems


def main(argv: list[str] | None = None) -> int:
    floor_python, floor_torch = box_requirements().supported_range(REPO / "pyproject.toml")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=floor_python, help="the image's Python version")
    parser.add_argument("--torch", default=exact_release(floor_torch), help="the image's torch version")
    args = parser.parse_args(argv)
    lane_started = started = time.monotonic()
    image = ensure_image_python(args.python, args.torch)
    image_torch = subprocess.run([str(image), "-c", "import importlib.metadata as m; print(m.version('torch'))"],
                                 check=True, capture_output=True, text=True).stdout.strip()
    phase(f"the image (Python {args.python}, torch {image_torch})", started)

    project = IMAGE_ROOT / f"lane-py{args.python}-torch{args.torch}"
    copy_project(project)
    started = time.monotonic()
    boot = subprocess.run(["bash", "infra/bootstrap.sh", "--python", str(image)], cwd=project, capture_output=True, text=True)
    print("\n".join(line for line in boot.stdout.splitlines() if line.startswith("bootstrap:")), flush=True)
    phase("bootstrap", started)
    venv_python = project / ".venv/bin/python"
    if boot.returncode != 0:
        print(boot.stdout[-3000:], boot.stderr[-3000:], sep="\n")
        print(f"oldest lane: FAILED: bootstrap exited {boot.returncode}")
        return 1
    problems = check_bootstrap(boot.stdout, image_torch, image.parent.parent, venv_python)
    if problems:
        print("oldest lane: FAILED: " + "; ".join(problems))
        return 1

    started = time.monotonic()
    subprocess.run([str(venv_python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--constraint", str(project / ".venv/llmbox-constraints.txt"), *TEST_TOOLS], check=True)
    phase("test tools", started)
    started = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(project)}
    tests = subprocess.run([str(venv_python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", *TRAINER_TESTS],
                           cwd=project, env=env)
    phase("the trainer's tests", started)
    phase("the whole lane", lane_started)
    if tests.returncode != 0:
        print(f"oldest lane: FAILED: the trainer's tests on Python {args.python} with torch {image_torch}")
        return 1
    print(f"oldest lane: passed on Python {args.python} with torch {image_torch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
