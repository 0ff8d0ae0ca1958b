"""The launcher installs and imports without torch; the trainer's heavy packages are an extra."""
from __future__ import annotations

import json
import subprocess
import sys

HEAVY = {"torch", "accelerate", "sentencepiece", "datasets", "numpy", "safetensors"}


def test_base_install_resolves_without_torch(project_root, tmp_path):
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q", "--report", str(report), str(project_root)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {"paramiko", "boto3", "click", "pydantic"} <= names
    assert not names & HEAVY, f"the base install pulls {names & HEAVY}"


def test_launcher_cli_never_imports_torch(project_root):
    code = "import sys, launcher.cli; heavy = sorted(m for m in sys.modules if m.split('.')[0] in %r); print(heavy); sys.exit(1 if heavy else 0)" % (HEAVY,)
    result = subprocess.run([sys.executable, "-c", code], cwd=project_root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
