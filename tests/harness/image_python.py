"""A simulated box image: a stand-alone Python of a given version with a given torch from the
registry and nothing else, like RunPod's and Vast's PyTorch images (issue 22).

The registry's torch of that age is the CUDA build with its nvidia wheels (~2.5 GB; it runs on
CPU), so each image is built once and kept under /opt/llmbox-test (LLMBOX_TEST_IMAGE_ROOT),
named by its Python and torch; a build that did not finish is redone.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

IMAGE_ROOT = Path(os.environ.get("LLMBOX_TEST_IMAGE_ROOT", "/opt/llmbox-test"))


def exact_release(version: str) -> str:
    """"2.4" -> "2.4.0": the oldest release a floor admits."""
    return version if version.count(".") >= 2 else f"{version}.0"


def find_python(version: str) -> str:
    """A stand-alone ``python<version>``, as an image has: the system's first (its site-packages
    hold only the distribution's own, like an image's), else pyenv's (looked up directly: its
    shims need PYENV_VERSION). Never this machine's working Python, whose site-packages hold every
    package the tests use: a venv made with --system-site-packages would see them all."""
    system = Path(f"/usr/bin/python{version}")
    if system.exists():
        return str(system)
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    for candidate in sorted(pyenv_root.glob(f"versions/{version}.*/bin/python{version}"), reverse=True):
        return str(candidate)
    found = shutil.which(f"python{version}")
    if not found or subprocess.run([found, "-c", "pass"], capture_output=True).returncode != 0:
        raise RuntimeError(f"python{version} is not installed (pyenv install {version})")
    return found


def ensure_image_python(python_version: str, torch_version: str) -> Path:
    """The image's interpreter (a venv of a stand-alone ``python<python_version>``) with ``torch==<torch_version>``."""
    real = find_python(python_version)
    base = IMAGE_ROOT / f"image-py{python_version}-torch{torch_version}"
    python, done = base / "bin" / "python", base / ".complete"
    if python.exists() and done.exists() and done.read_text().startswith(f"{real}\n"):
        return python
    started = time.monotonic()
    subprocess.run([real, "-m", "venv", "--clear", str(base)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"torch=={torch_version}"], check=True)
    done.write_text(f"{real}\nbuilt in {time.monotonic() - started:.0f} s\n")
    subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
    return python


if __name__ == "__main__":  # build (or find) the oldest supported image: python -m tests.harness.image_python
    from tests.harness.paths import REPO, box_requirements

    py, torch_floor = box_requirements().supported_range(REPO / "pyproject.toml")
    started = time.monotonic()
    print(ensure_image_python(py, exact_release(torch_floor)), f"{time.monotonic() - started:.0f} s")
