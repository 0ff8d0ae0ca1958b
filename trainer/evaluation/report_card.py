"""The report card: a checkpoint's lm-eval benchmark scores beside published baselines.

Built from lm-eval's results (trainer/evaluation/lm_eval_tasks.py), the checkpoint's own evaluation
(trainer/evaluation/evaluate.py: validation loss and bits per byte, C4's split when the data has one) and the
published scores in trainer/evaluation/report_baselines.yaml. Writes ``report.json`` (runcontract.run_files.
ReportFile) and ``report.md`` into the run folder; docs/report-card.md says how to read it.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import yaml

from runcontract.atomic import atomic_write_text
from runcontract.run_files import BaselineScore, ReportFile, TaskScore
from runcontract.run_folder import REPORT_JSON, REPORT_MD

BASELINES_FILE = Path(__file__).with_name("report_baselines.yaml")
# Random guessing on the tasks we ship (4 endings, mostly 4 choices, 2 solutions, an open word).
CHANCE = {("hellaswag", "acc"): 0.25, ("hellaswag", "acc_norm"): 0.25, ("arc_easy", "acc"): 0.25, ("arc_easy", "acc_norm"): 0.25,
          ("piqa", "acc"): 0.5, ("piqa", "acc_norm"): 0.5, ("lambada_openai", "acc"): 0.0}
C4_SOURCE = "c4"

HOW_TO_READ = """\
## How to read this card

- Each row is one lm-eval metric; "this run" is exactly what lm-evaluation-harness computed on the
  exported model. A baseline is comparable only at the same shot count (0-shot unless the row says otherwise).
- acc / acc_norm are accuracies (higher is better; acc_norm divides each answer's log-likelihood by its
  length in characters). Chance: hellaswag 0.25, arc_easy about 0.25, piqa 0.50, lambada_openai 0.
  perplexity, word_perplexity, byte_perplexity and bits_per_byte are lower-is-better.
- Models of ~100M parameters sit close to chance on hellaswag and arc_easy (Pythia-160M: arc_easy acc 0.44);
  piqa and lambada show progress first. A gap smaller than the ± column is noise.
- "not published": no lm-eval number for that model, task and shot count was found; none was made up.
- With a limit (documents per task) or local task data the numbers are a smoke test, not comparable with the baselines.
"""


def load_baselines(path: Path = BASELINES_FILE) -> tuple[list[str], dict[tuple[str, str, str], BaselineScore]]:
    """Model names in column order, and {(model, task, metric): score}."""
    data = yaml.safe_load(path.read_text()) or {}
    scores = {(s["model"], s["task"], s["metric"]): BaselineScore(value=s["value"], num_fewshot=s["num_fewshot"], source=s["source"])
              for s in data.get("scores", [])}
    return list(data.get("models", [])), scores


def task_scores(lm_results: dict, models: list[str], baselines: dict) -> list[TaskScore]:
    """One TaskScore per task and metric of lm-eval's results (its ``metric,filter`` keys)."""
    rows = []
    for task, metrics in lm_results.get("results", {}).items():
        shots = int(lm_results.get("n-shot", {}).get(task, 0) or 0)
        samples = lm_results.get("n-samples", {}).get(task, {}).get("effective")
        directions = lm_results.get("higher_is_better", {}).get(task, {})
        for key, value in metrics.items():
            metric, _, _filter = key.partition(",")
            if not _ or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            stderr = metrics.get(f"{metric}_stderr,{_filter}")
            rows.append(TaskScore(
                task=task, metric=metric, value=float(value), stderr=float(stderr) if isinstance(stderr, (int, float)) else None,
                num_fewshot=shots, samples=samples, higher_is_better=directions.get(metric), chance=CHANCE.get((task, metric)),
                baselines={model: _same_shots(baselines.get((model, task, metric)), shots) for model in models},
            ))
    return rows


def _same_shots(score: Optional[BaselineScore], shots: int) -> Optional[BaselineScore]:
    return score if score is not None and score.num_fewshot == shots else None


def build_report(checkpoint: Path, eval_result: dict, lm_results: dict, hf_dir: Path, task_data: Optional[str],
                 limit: Optional[int]) -> ReportFile:
    models, baselines = load_baselines()
    c4 = (eval_result.get("sources") or {}).get(C4_SOURCE)
    val, split = (c4, C4_SOURCE) if c4 else (eval_result, "mix")
    return ReportFile(
        checkpoint=str(checkpoint), step=eval_result.get("step"), tokens_trained=eval_result.get("tokens_seen"),
        val_loss=val.get("val_loss"), val_bpb=val.get("bits_per_byte"), val_split=split,
        tasks=task_scores(lm_results, models, baselines), task_data=str(task_data) if task_data else None, limit=limit,
        lm_eval_version=_lm_eval_version(), hf_model=str(hf_dir), created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def _lm_eval_version() -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lm_eval")
    except PackageNotFoundError:
        return None


def _fmt(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"


def render_markdown(report: ReportFile, models: Optional[list[str]] = None) -> str:
    models = models if models is not None else load_baselines()[0]
    tokens = f"{report.tokens_trained:,}" if report.tokens_trained is not None else "unknown"
    lines = [
        f"# Report card: {report.checkpoint}",
        "",
        f"- step {report.step if report.step is not None else 'unknown'}, tokens trained {tokens}",
        f"- validation loss ({report.val_split}): {_fmt(report.val_loss)} nats/token, bits per byte {_fmt(report.val_bpb)}",
        f"- lm-eval {report.lm_eval_version or '?'} on {report.hf_model}; data: {report.task_data or 'the hub (lm-eval defaults)'}"
        + (f"; limited to {report.limit} documents per task" if report.limit else ""),
        "",
        "| task | metric | shots | this run | ± | chance | " + " | ".join(models) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(models),
    ]
    sources = []
    for row in report.tasks:
        cells = []
        for model in models:
            score = row.baselines.get(model)
            if score is None:
                cells.append("not published")
                continue
            if score.source not in sources:
                sources.append(score.source)
            cells.append(f"{_fmt(score.value)} [{sources.index(score.source) + 1}]")
        lines.append(f"| {row.task} | {row.metric} | {row.num_fewshot} | {_fmt(row.value)} | {_fmt(row.stderr)} | {_fmt(row.chance)} | " + " | ".join(cells) + " |")
    if sources:
        lines += ["", "Sources:"] + [f"{i}. {source}" for i, source in enumerate(sources, 1)]
    return "\n".join(lines) + "\n\n" + HOW_TO_READ


def write_report(run_dir: Path, report: ReportFile) -> tuple[Path, Path]:
    """report.json then report.md, each replaced in one rename."""
    report.write(run_dir / REPORT_JSON)
    atomic_write_text(run_dir / REPORT_MD, render_markdown(report))
    return run_dir / REPORT_JSON, run_dir / REPORT_MD
