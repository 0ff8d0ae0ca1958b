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


# Run in a fresh interpreter: a finder first on sys.meta_path refuses torch, numpy, the other
# heavy packages and every ``trainer`` module, so an import of any of them (however indirect)
# fails there as it would on a laptop that installed only the launcher.
BLOCKED_IMPORTS = """
import contextlib, importlib, json, pkgutil, runpy, sys

BLOCKED = %r

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the launcher's install has no {name.split('.')[0]}")
        return None

sys.meta_path.insert(0, Refuse())
with contextlib.suppress(ImportError):  # the blocker must refuse trainer, or this check proves nothing
    import trainer.config  # noqa: F401
    sys.exit("the blocker let trainer through")

imported, failed = [], {}
for package in ("runcontract", "launcher"):
    root = importlib.import_module(package)
    imported.append(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        if info.name == "launcher.__main__":
            continue  # runs the CLI: imported below through runpy
        try:
            importlib.import_module(info.name)
            imported.append(info.name)
        except ImportError as exc:
            failed[info.name] = str(exc)
sys.argv = ["launcher", "--help"]
try:
    runpy.run_module("launcher", run_name="__main__")
except SystemExit as exit:
    if exit.code not in (0, None):
        failed["launcher.__main__"] = f"--help exited {exit.code}"
print(json.dumps({"imported": imported, "failed": failed}))
"""


def test_every_launcher_module_imports_without_torch_numpy_or_trainer(project_root):
    blocked = sorted(HEAVY | {"trainer"})
    result = subprocess.run([sys.executable, "-c", BLOCKED_IMPORTS % (blocked,)], cwd=project_root,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failed"] == {}, report["failed"]
    # The walk found the whole launcher, not a part of it (so the test cannot pass empty-handed).
    expected = {"runcontract.errors", "runcontract.run_folder", "launcher.agent", "launcher.store.base", "launcher.store.s3",
                "launcher.stages", "launcher.providers.runpod", "launcher.providers.vastai", "launcher.commands.run",
                "launcher.commands.status", "launcher.commands.fetch_checkpoint"}
    assert expected <= set(report["imported"]), expected - set(report["imported"])


def test_the_wheel_carries_launcher_and_runcontract_but_not_the_trainer(project_root, tmp_path):
    """What `pip install .` puts on a laptop, built offline from a copy of the project."""
    import shutil
    import zipfile

    source = tmp_path / "src"
    shutil.copytree(project_root, source, ignore=shutil.ignore_patterns(".git", "runs", "data", "tokenizer", ".launcher", "build", "*.egg-info", "__pycache__"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(source)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("llm_box-*.whl")
    packages = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    assert packages == {"launcher", "runcontract"}, packages
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"launcher/agent.py", "launcher/cli.py", "runcontract/run_files.py", "runcontract/budget.py"} <= names
