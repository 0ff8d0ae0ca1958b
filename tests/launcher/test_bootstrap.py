"""infra/bootstrap.sh on a box image's Python (issue 22). Keeping a supported image's torch,
with the MB and seconds it took, is run for real on the oldest supported image by CI's oldest
lane (tests/harness/oldest_lane.py: ~2.5 GB of torch, so not here)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.harness.paths import REPO


def scratch_image(tmp_path: Path, torch_version: str) -> Path:
    """A Python whose only torch is metadata saying ``torch_version`` (nothing of torch runs)."""
    image = tmp_path / "image"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(image)], check=True)
    site = Path(subprocess.run([str(image / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    info = site / f"torch-{torch_version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {torch_version}\n")
    (info / "RECORD").write_text("")
    return image / "bin/python"


def project_copy(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    shutil.copytree(REPO / "infra", project / "infra")
    shutil.copy(REPO / "pyproject.toml", project)
    return project


def test_an_image_torch_below_the_floor_is_refused_in_one_line_before_anything_is_installed(tmp_path):
    python = scratch_image(tmp_path, "2.4.0+cu124")  # RunPod's default image of 2024
    project = project_copy(tmp_path)
    result = subprocess.run(["bash", "infra/bootstrap.sh", "--python", str(python)], cwd=project,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 3, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert "torch is 2.4.0+cu124" in errors[0] and "torch >= 2.6" in errors[0] and "nothing was installed" in errors[0]
    assert not (project / ".venv").exists()
    assert "Traceback" not in result.stdout + result.stderr


def test_the_supported_range_is_declared_once_and_read_by_bootstrap():
    from tests.harness.paths import box_requirements

    reqs = box_requirements()
    assert reqs.supported_range(REPO / "pyproject.toml") == ("3.10", "2.6")
    assert reqs.torch_refusal(REPO / "pyproject.toml", "2.6.0+cu124") is None
    assert reqs.torch_refusal(REPO / "pyproject.toml", "2.13.0+cpu") is None
    assert reqs.torch_refusal(REPO / "pyproject.toml", "2.10.0") is None  # numerically, not as text
    assert "torch >= 2.6" in reqs.torch_refusal(REPO / "pyproject.toml", "2.5.1")
    names = {reqs.requirement_name(r) for r in reqs.box_requirements(REPO / "pyproject.toml")}
    assert "transformers" in names  # export runs on the box (issue 22)


def test_a_report_card_run_adds_the_eval_extra_and_an_unknown_extra_is_one_line(tmp_path):
    from tests.harness.paths import box_requirements

    reqs = box_requirements()
    pyproject = REPO / "pyproject.toml"
    names = lambda extras: {reqs.requirement_name(r) for r in reqs.box_requirements(pyproject, extras)}
    assert "lm-eval" not in names(("trainer",))
    assert {"lm-eval", "torch", "transformers"} <= names(("trainer", "eval"))
    assert names(("eval",)) == names(("trainer", "eval"))  # the trainer's always
    result = subprocess.run([sys.executable, "infra/box_requirements.py", "--extras", "trainer,nope"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode != 0 and "declares no extra nope" in result.stderr and "Traceback" not in result.stderr


def test_fetched_megabytes_are_summed_from_pips_own_lines(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("fetch_summary", REPO / "infra" / "fetch_summary.py")
    summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary)
    local = tmp_path / "h11-0.16.0-py3-none-any.whl"
    local.write_bytes(b"x" * 2_000_000)
    log = ["Collecting accelerate>=0.30",
           "  Downloading accelerate-1.15.0-py3-none-any.whl (375 kB)",
           "  Using cached datasets-5.2.0-py3-none-any.whl (1.5 MB)",
           f"Processing {local}",
           "Requirement already satisfied: torch==2.4.0 in /image/lib/python3.10/site-packages",
           "Downloading pyarrow-26.0.1-cp310-cp310-manylinux_2_28_x86_64.whl (45.2 MB)"]
    size, names = summary.fetched(log)
    assert size == 375e3 + 1.5e6 + 2_000_000 + 45.2e6
    assert names == ["accelerate-1.15.0-py3-none-any.whl", "datasets-5.2.0-py3-none-any.whl", local.name,
                     "pyarrow-26.0.1-cp310-cp310-manylinux_2_28_x86_64.whl"]
