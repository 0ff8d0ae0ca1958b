"""``launcher run``'s stages: context.py (what they share), runner.py (the ordered list and how it
runs), one module per stage, and the files the launcher hands the box (store_and_secrets.py)."""
from launcher.stages.context import RunContext
from launcher.stages.progress import progress_bar
from launcher.stages.run_status import finished_run
from launcher.stages.runner import build_stages, run_stages
from launcher.stages.setup import bootstrap

__all__ = ["RunContext", "bootstrap", "build_stages", "finished_run", "progress_bar", "run_stages"]
