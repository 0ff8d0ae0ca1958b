"""The report card (issue 26): lm-eval tasks on the exported model, from local task data in the
hub datasets' schemas (rows made up here), with the hub switched off; the numbers must equal
what lm-eval's own CLI prints for the same exported model and the same tasks."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from runcontract.errors import UserError
from runcontract.run_files import ReportFile
from tests.trainer.evaluation.test_eval_export import world  # noqa: F401  (the tiny checkpoint, tokenizer and val.bin)

pytest.importorskip("lm_eval", reason="the eval extra (lm-eval) is not installed")

OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
TASKS = ["arc_easy", "piqa", "hellaswag", "lambada_openai", "wikitext"]
NOUNS = "river city town bridge garden kettle lamp window market harbor school train".split()
VERBS = "opens closes crosses fills carries paints follows finds builds".split()


def _sentence(rng: random.Random, words: int = 6) -> str:
    return " ".join(rng.choice(NOUNS + VERBS + ["the", "a", "of", "and"]) for _ in range(words)).capitalize()


def write_task_data(folder: Path, rows: int = 4) -> Path:
    """<folder>/<task>/<split>.jsonl in each task's hub schema, from words made up here."""
    rng = random.Random(26)

    def dump(task: str, split: str, records: list[dict]) -> None:
        (folder / task).mkdir(parents=True, exist_ok=True)
        (folder / task / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    dump("arc_easy", "test", [{"id": f"q{i}", "question": _sentence(rng) + "?",
                               "choices": {"text": [_sentence(rng, 3) for _ in range(4)], "label": ["A", "B", "C", "D"]},
                               "answerKey": "ABCD"[i % 4]} for i in range(rows)])
    dump("piqa", "validation", [{"goal": _sentence(rng), "sol1": _sentence(rng, 4), "sol2": _sentence(rng, 4), "label": i % 2}
                                for i in range(rows)])
    dump("hellaswag", "validation", [{"ind": i, "activity_label": rng.choice(NOUNS).capitalize(), "ctx_a": _sentence(rng),
                                      "ctx_b": _sentence(rng, 3).lower(), "ctx": "", "endings": [_sentence(rng, 4) for _ in range(4)],
                                      "source_id": f"made-up-{i}", "split": "val", "split_type": "indomain", "label": str(i % 4)}
                                     for i in range(rows)])
    dump("lambada_openai", "test", [{"text": _sentence(rng, 12)} for _ in range(rows)])
    dump("wikitext", "test", [{"page": " = " + _sentence(rng, 3) + " = \n " + " . ".join(_sentence(rng, 10) for _ in range(5)) + " . \n"}
                              for _ in range(2)])
    return folder


@pytest.mark.slow
def test_report_card_equals_lm_eval_cli(world, tmp_path, run_python):  # noqa: F811
    data = write_task_data(tmp_path / "task_data")
    run_dir = world["run"]
    hf_dir = tmp_path / "final_hf"
    ours = run_python("-m", "trainer.eval", "--checkpoint", str(world["final"]), "--tokenizer_model", str(world["spm"]),
                      "--eval_tokens", "256", "--max_new_tokens", "2", "--device", "cpu", "--tasks", ",".join(TASKS),
                      "--task_data", str(data), "--hf_dir", str(hf_dir), env=OFFLINE, timeout=600)
    assert ours.returncode == 0, ours.stderr[-4000:]
    report = ReportFile.read(run_dir / "report.json")
    values = {(row.task, row.metric): row for row in report.tasks}
    assert {task for task, _ in values} == set(TASKS)
    assert report.task_data == str(data) and report.tokens_trained == 20 * 256 and report.val_split == "mix"
    assert report.val_loss == pytest.approx(json.loads((world["final"] / "eval.json").read_text())["val_loss"])
    assert values[("arc_easy", "acc")].samples == 4 and values[("piqa", "acc")].chance == 0.5
    pythia = values[("arc_easy", "acc")].baselines["Pythia-160M"]
    assert pythia is not None and pythia.num_fewshot == 0 and "EleutherAI/pythia" in pythia.source
    assert values[("hellaswag", "acc_norm")].baselines["GPT-2 124M"].value == 0.3114
    assert values[("hellaswag", "acc")].baselines["SmolLM-135M"] is None  # not published: never made up

    markdown = (run_dir / "report.md").read_text()
    assert "| arc_easy | acc | 0 |" in markdown and "not published" in markdown and "How to read this card" in markdown

    # lm-eval's own CLI, same exported model, same local tasks (the include path the report used)
    from trainer.evaluation.lm_eval_tasks import write_local_task_configs

    include = write_local_task_configs(data, TASKS, tmp_path / "include")
    out = tmp_path / "cli_out"
    cli = run_python("-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={hf_dir},dtype=float32", "--tasks", ",".join(TASKS),
                     "--include_path", str(include), "--device", "cpu", "--batch_size", "1", "--output_path", str(out),
                     env=OFFLINE, timeout=600)
    assert cli.returncode == 0, cli.stderr[-4000:]
    written = list(out.rglob("results_*.json"))
    assert len(written) == 1, written
    cli_results = json.loads(written[0].read_text())
    compared = 0
    for task in TASKS:
        assert cli_results["n-shot"][task] == values[(task, next(m for t, m in values if t == task))].num_fewshot
        for key, value in cli_results["results"][task].items():
            metric, _, _filter = key.partition(",")
            if _ and not metric.endswith("_stderr") and isinstance(value, (int, float)):
                assert values[(task, metric)].value == value, (task, metric)
                compared += 1
    assert compared == len(report.tasks) >= 2 * len(TASKS)
    for task in ("arc_easy", "piqa"):  # the CLI's printed table carries the same figures
        assert f"{values[(task, 'acc')].value:.4f}" in cli.stdout

    # without --task_data the real path reads the hub: offline, that is one clear paragraph, exit 1
    hub = run_python("-m", "trainer.eval", "--checkpoint", str(world["final"]), "--tokenizer_model", str(world["spm"]),
                     "--eval_tokens", "256", "--max_new_tokens", "2", "--device", "cpu", "--tasks", "piqa", "--limit", "1",
                     "--hf_dir", str(hf_dir), env=OFFLINE, timeout=600)
    assert hub.returncode == 1 and "could not load the data of piqa" in hub.stderr and "--task_data" in hub.stderr
    assert "Traceback" not in hub.stderr


def test_local_task_configs_point_lm_eval_at_the_files(tmp_path, monkeypatch):
    import yaml

    from trainer.evaluation.lm_eval_tasks import write_local_task_configs

    data = write_task_data(tmp_path / "data")
    include = write_local_task_configs(data, ["arc_easy", "piqa"], tmp_path / "inc")
    arc = yaml.safe_load((include / "arc_easy.yaml").read_text())
    assert arc["dataset_path"] == "json" and arc["dataset_name"] is None and arc["task"] == "arc_easy"
    assert arc["dataset_kwargs"]["data_files"] == {"test": str((data / "arc_easy" / "test.jsonl").resolve())}
    assert (arc["test_split"], arc["validation_split"], arc["training_split"]) == ("test", None, None)
    assert arc["include"].endswith(os.path.join("arc", "arc_easy.yaml"))

    from lm_eval.tasks import TaskManager  # lm-eval itself builds the task from it, offline, from the file

    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)
    task = TaskManager(include_path=str(include), include_defaults=False).load(["piqa"])["tasks"]["piqa"]
    docs = list(task.eval_docs)
    assert len(docs) == 4 and docs[0]["goal"] == json.loads((data / "piqa" / "validation.jsonl").read_text().splitlines()[0])["goal"]


def test_missing_task_data_is_clear(tmp_path):
    from trainer.evaluation.lm_eval_tasks import write_local_task_configs

    with pytest.raises(UserError, match="no data for task 'piqa'.*piqa/validation.jsonl"):
        write_local_task_configs(tmp_path, ["piqa"], tmp_path / "inc")


@pytest.mark.slow  # builds lm-eval's index of its thousands of task YAMLs (~20-60 s here)
def test_unknown_task_is_clear(tmp_path):
    from trainer.evaluation.lm_eval_tasks import write_local_task_configs

    (tmp_path / "no_such_task").mkdir()
    (tmp_path / "no_such_task" / "test.jsonl").write_text("{}\n")
    with pytest.raises(UserError, match="lm-eval has no task named 'no_such_task'"):
        write_local_task_configs(tmp_path, ["no_such_task"], tmp_path / "inc")


def test_train_writes_the_report_card_after_final_before_it_finishes(world, tmp_path, monkeypatch):  # noqa: F811
    """train.eval.tasks: the trainer scores final/ and writes report.json/report.md before status.json
    says finished (the agent's last sync mirrors what is there then); a report that cannot be made
    is a warning, and the run still finishes with its model."""
    from tests.harness.trainer_runs import make_data, tiny_args
    from trainer.training.loop import main

    for name, value in OFFLINE.items():
        monkeypatch.setenv(name, value)
    make_data(tmp_path / "data", vocab=512)
    data = write_task_data(tmp_path / "task_data")
    common = ("--set", "model.vocab_size=512", "--set", f"train.tokenizer_model={world['spm']}",
              "--set", "train.checks.overfit_microset.enabled=false", "--set", "train.eval.tasks=[arc_easy, piqa]", "--set", "train.eval.limit=2")
    assert main(tiny_args(tmp_path, "rc", *common, "--set", f"train.eval.task_data={data}", steps=2)) == 0
    run = tmp_path / "runs" / "rc"
    report = ReportFile.read(run / "report.json")
    assert {(r.task, r.metric) for r in report.tasks} == {("arc_easy", "acc"), ("arc_easy", "acc_norm"), ("piqa", "acc"), ("piqa", "acc_norm")}
    assert report.limit == 2 and all(r.samples == 2 for r in report.tasks) and report.step == 2 and report.tokens_trained == 2 * 256
    assert "report card: 4 scores" in (run / "train.log").read_text() and (run / "report.md").is_file()
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["updated"] >= (run / "report.md").stat().st_mtime - 1

    (tmp_path / "empty").mkdir()
    assert main(tiny_args(tmp_path, "rc2", *common, "--set", f"train.eval.task_data={tmp_path / 'empty'}", steps=2)) == 0
    run = tmp_path / "runs" / "rc2"
    assert json.loads((run / "status.json").read_text())["state"] == "finished" and not (run / "report.json").exists()
    log = (run / "train.log").read_text()
    assert "warning: report card not written: --task_data" in log and "no data for task 'arc_easy'" in log and "python -m trainer.eval" in log


def test_baselines_have_sources_and_show_only_at_the_same_shot_count():
    from trainer.evaluation.report_card import build_report, load_baselines, render_markdown

    models, baselines = load_baselines()
    assert models == ["GPT-2 124M", "Pythia-160M", "SmolLM-135M"]
    assert baselines and all(score.source.strip() and "http" in score.source for score in baselines.values())
    assert {model for model, _, _ in baselines} <= set(models)
    lm = {"results": {"piqa": {"alias": "piqa", "acc,none": 0.5, "acc_stderr,none": 0.1, "acc_norm,none": 0.75, "acc_norm_stderr,none": 0.1}},
          "n-shot": {"piqa": 5}, "n-samples": {"piqa": {"original": 4, "effective": 4}}, "higher_is_better": {"piqa": {"acc": True}}}
    evaluated = {"step": 7, "tokens_seen": 7_000, "val_loss": 4.0, "bits_per_byte": 1.5, "sources": {"c4": {"val_loss": 4.5, "bits_per_byte": 1.6}}}
    report = build_report(Path("runs/x/final"), evaluated, lm, Path("runs/x/final_hf"), None, None)
    assert (report.val_split, report.val_loss, report.val_bpb, report.tokens_trained) == ("c4", 4.5, 1.6, 7_000)
    assert [row.metric for row in report.tasks] == ["acc", "acc_norm"] and report.tasks[0].higher_is_better is True
    assert all(score is None for row in report.tasks for score in row.baselines.values())  # Pythia's piqa is 0-shot, this run 5-shot
    assert "| piqa | acc | 5 | 0.5000 | 0.1000 | 0.5000 | not published | not published | not published |" in render_markdown(report)
    lm["n-shot"]["piqa"] = 0
    zero = build_report(Path("runs/x/final"), evaluated, lm, Path("runs/x/final_hf"), None, None)
    assert zero.tasks[0].baselines["Pythia-160M"].value == pytest.approx(0.6273, abs=1e-4)
    markdown = render_markdown(zero)
    assert "| piqa | acc | 0 | 0.5000 | 0.1000 | 0.5000 | not published | 0.6273 [1] | not published |" in markdown
    assert "1. EleutherAI/pythia" in markdown and "validation loss (c4): 4.5000" in markdown and "tokens trained 7,000" in markdown


def test_without_lm_eval_the_error_says_how_to_install_it(run_python):
    blocked = ("import sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] == 'lm_eval':\n"
               "            raise ImportError('No module named lm_eval')\n"
               "sys.meta_path.insert(0, Block())\n"
               "from trainer.evaluation.lm_eval_tasks import stock_task_yaml\n"
               "stock_task_yaml('piqa')\n")
    result = run_python("-c", blocked, timeout=60)
    assert result.returncode == 1 and "UserError" in result.stderr and "pip install -e '.[eval]'" in result.stderr
