"""Standard benchmarks through lm-evaluation-harness on an exported HF model (issue 26).

lm-eval's stock tasks (hellaswag, arc_easy, piqa, lambada_openai, wikitext, ...) read their data
from the Hugging Face hub; that is the default here. ``task_data`` points the same tasks at local
files instead, one folder per task in the hub dataset's own schema (its columns), one file per split:

    <task_data>/<task>/<split>.jsonl      e.g. arc_easy/test.jsonl, piqa/validation.jsonl

For each task a YAML is written that ``include``s the stock task (so prompts, choices, metrics and
preprocessing stay lm-eval's own) and overrides only where the data comes from
(``dataset_path: json`` with ``data_files``) and which splits exist. That folder is an ordinary
``--include_path``, so lm-eval's own CLI runs the very same tasks:
``lm_eval --model hf --model_args pretrained=<hf dir> --tasks arc_easy --include_path <folder>``.

lm-eval's API as published (lm_eval 0.4.x: ``lm_eval.simple_evaluate``, ``lm_eval.tasks.TaskManager``
with ``include_path`` taking precedence over the stock tasks, YAML ``include`` of an absolute path;
docs/task_guide.md and docs/interface.md of EleutherAI/lm-evaluation-harness, read 2026-12-03).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Optional

import yaml

from runcontract.errors import UserError

SPLIT_KEYS = {"train": "training_split", "validation": "validation_split", "test": "test_split"}
DATA_SUFFIX = ".jsonl"
# Where lm-eval keeps the tasks the report card ships (looked up by name in its index otherwise).
SHIPPED_TASK_YAMLS = {"hellaswag": "hellaswag/hellaswag.yaml", "arc_easy": "arc/arc_easy.yaml", "piqa": "piqa/piqa.yaml",
                      "lambada_openai": "lambada/lambada_openai.yaml", "wikitext": "wikitext/wikitext.yaml"}
INSTALL_HINT = "install the eval extra: pip install -e '.[eval]' (lm-eval, with a constraint torch==<the installed torch> so torch is kept)"


def _lm_eval():
    try:
        import lm_eval  # noqa: F401
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise UserError(f"--tasks needs lm-evaluation-harness, which is not installed ({exc}); {INSTALL_HINT}.") from None
    return TaskManager


def parse_tasks(tasks) -> list[str]:
    """"hellaswag,arc_easy" or a list -> ["hellaswag", "arc_easy"] (order kept, duplicates dropped)."""
    items = tasks.split(",") if isinstance(tasks, str) else list(tasks or [])
    names = []
    for item in (str(t).strip() for t in items):
        if item and item not in names:
            names.append(item)
    return names


@functools.lru_cache(maxsize=1)
def _stock_index() -> dict:
    return _lm_eval()().task_index  # scanning lm-eval's thousands of task YAMLs takes seconds: once


def stock_task_yaml(task: str) -> Path:
    """The YAML of lm-eval's own task ``task``; a clear error for an unknown name."""
    _lm_eval()  # installed, or a clear error
    import lm_eval.tasks

    shipped = Path(lm_eval.tasks.__file__).parent / SHIPPED_TASK_YAMLS.get(task, "-")
    if shipped.is_file():
        return shipped
    entry = _stock_index().get(task)
    if entry is None or entry.yaml_path is None:
        raise UserError(f"lm-eval has no task named {task!r}; list them with `lm_eval ls tasks` (e.g. hellaswag, arc_easy, piqa, lambada_openai, wikitext).")
    return Path(entry.yaml_path)


def write_local_task_configs(task_data: str | Path, tasks: list[str], out_dir: str | Path) -> Path:
    """Write ``<out_dir>/<task>.yaml`` for each task, reading ``<task_data>/<task>/<split>.jsonl``;
    returns ``out_dir`` (an lm-eval include path)."""
    task_data, out_dir = Path(task_data), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        folder = task_data / task
        files = {split: folder / f"{split}{DATA_SUFFIX}" for split in SPLIT_KEYS}
        present = {split: path for split, path in files.items() if path.is_file()}
        if not ({"validation", "test"} & set(present)):
            raise UserError(
                f"--task_data {task_data} has no data for task {task!r}: expected {folder}/validation{DATA_SUFFIX} or "
                f"{folder}/test{DATA_SUFFIX} (JSON lines in the hub dataset's schema; see docs/report-card.md)."
            )
        config = {
            "include": str(stock_task_yaml(task).resolve()),
            "task": task,
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {split: str(path.resolve()) for split, path in present.items()}},
            **{key: (split if split in present else None) for split, key in SPLIT_KEYS.items()},
        }
        (out_dir / f"{task}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return out_dir


def run_tasks(hf_dir: str | Path, tasks: list[str], include_path: Optional[Path] = None, num_fewshot: Optional[int] = None,
              limit: Optional[int] = None, batch_size: int = 1, device: str = "cpu") -> dict:
    """Run lm-eval's harness on the exported model; returns its results dict (``results``,
    ``n-shot``, ``n-samples``, ``versions``, ``config``), as its CLI would write it."""
    TaskManager = _lm_eval()
    import lm_eval

    # Local tasks include the stock YAMLs by path: lm-eval's own index (seconds to build) is not needed.
    manager = TaskManager(include_path=str(include_path), include_defaults=False) if include_path else TaskManager()
    try:
        results = lm_eval.simple_evaluate(
            model="hf", model_args={"pretrained": str(hf_dir), "dtype": "float32"}, tasks=list(tasks), num_fewshot=num_fewshot,
            limit=limit, batch_size=batch_size, device=device, task_manager=manager, log_samples=False,
        )
    except (FileNotFoundError, ConnectionError, OSError) as exc:
        raise UserError(f"lm-eval could not load the data of {', '.join(tasks)}: {exc}. Without the hub, pass --task_data with local copies (docs/report-card.md).") from None
    if results is None:
        raise UserError("lm-eval returned no results (it does so on non-zero ranks only); run it as a single process.")
    return json.loads(json.dumps({key: results[key] for key in ("results", "n-shot", "n-samples", "higher_is_better", "versions", "config") if key in results}, default=str))
