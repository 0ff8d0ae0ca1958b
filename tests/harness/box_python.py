"""The Python a rented GPU box's image provides: an interpreter that already has torch.

Images on RunPod/Vast ship torch; the box bootstrap reuses it (a venv with
--system-site-packages). Here the test user cannot read root's Python, so one such
interpreter is built once under /opt (world-readable) from Debian's python3, with the CPU
torch wheel pinned so no CUDA packages are pulled. Reused across runs while pyproject.toml's
dependencies are unchanged.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tests.harness.paths import box_requirements

ROOT = Path(__file__).resolve().parents[2]
BOX_PYTHON_BASE = Path(os.environ.get("LLMBOX_TEST_BOX_PYTHON", "/opt/llmbox-test/box-python"))
TORCH_PIN = "torch==2.13.0"


def _requirements() -> list[str]:
    return box_requirements().box_requirements(ROOT / "pyproject.toml")


def ensure_box_python() -> Path:
    reqs = _requirements()
    stamp_value = hashlib.sha256("\n".join([TORCH_PIN, *reqs]).encode()).hexdigest()
    python = BOX_PYTHON_BASE / "bin" / "python"
    stamp = BOX_PYTHON_BASE / ".requirements.sha256"
    if python.exists() and stamp.exists() and stamp.read_text() == stamp_value:
        return python
    base = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    subprocess.run([base, "-m", "venv", "--clear", str(BOX_PYTHON_BASE)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, TORCH_PIN], check=True)  # first, alone: a range could pull CUDA wheels
    subprocess.run([*pip, TORCH_PIN, *reqs], check=True)
    stamp.write_text(stamp_value)
    subprocess.run(["chmod", "-R", "a+rX", str(BOX_PYTHON_BASE.parent)], check=True)
    return python
