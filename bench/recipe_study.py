"""Recipe study (not a test): which learning rate, final lr, warmup, batch size and data order
train the smoke-sized model best at equal tokens, on the offline corpus, on a CPU.

    python bench/recipe_study.py [--output_dir runs/recipe_study] [--tokens 122880] [--jobs 2] [--arms a,b,...]

Every arm is a real ``python -m trainer.train`` run (configs/model_smoke.yaml, seq_len 128) on
the same data: a tokenizer and memmaps built from the installed Python standard library's
docstrings (trainer/corpus/smoke_data.py), train.bin sized so that ``--tokens`` is about one epoch.
Each arm trains ``--tokens`` tokens; the whole validation split is scored at the end (loss and
bits per byte). The baseline arm is the recipe the 100M config had before this study (lr 6e-4 and
cosine to 10%: Pythia-160M's; 5% warmup: the config's 200 of 3,815 steps); the table shows each arm against it, measured in the
same run. A second seed of one arm shows how much of a difference is noise. Prints a Markdown
table (for docs/training-recipe.md) and writes <output_dir>/recipe_study.json.

Compute: 13 arms x 122,880 tokens (120 steps of the baseline), about 15 minutes on 2 CPU cores
shared with other work (~800 tokens/s an arm), --jobs 2.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runcontract.errors import UserError, cli_main  # noqa: E402
from runcontract.run_folder import FINAL_DIR, METRICS_FILE, RUNS_DIR, STATUS_FILE, TRAIN_LOG, run_rel  # noqa: E402
from trainer.cli_args import add_deprecated_alias  # noqa: E402

SEQ_LEN = 128
MICRO_BATCH = 8
BASE_BATCH_TOKENS = 1024  # 8 sequences of 128: a few hundred steps per arm at equal tokens
CENTER_LR = 1.5e-3  # the arms that vary one other thing do it here (between the sweep's ends)

# name -> (what it tests, overrides of the baseline)
BASELINE = {"lr": 6e-4, "min_lr_ratio": 0.1, "warmup_frac": 0.05, "batch_tokens": BASE_BATCH_TOKENS, "sampling": "epoch", "seed": 1337}
ARMS = {
    "baseline": ("before this study: lr 6e-4 and cosine to 10% (Pythia-160M's), 5% warmup", {}),
    "lr3e-4": ("lr 3e-4", {"lr": 3e-4}),
    "lr1.5e-3": ("lr 1.5e-3", {"lr": CENTER_LR}),
    "lr3e-3": ("lr 3e-3", {"lr": 3e-3}),
    "lr1.5e-3-seed2": ("lr 1.5e-3, another seed (noise)", {"lr": CENTER_LR, "seed": 2024}),
    "lr1.5e-3-final0": ("lr 1.5e-3, decay to 0", {"lr": CENTER_LR, "min_lr_ratio": 0.0}),
    "lr3e-3-final0": ("lr 3e-3, decay to 0 (SmolLM-135M's lr and floor)", {"lr": 3e-3, "min_lr_ratio": 0.0}),
    "warmup1pct": ("lr 1.5e-3, 1% warmup", {"lr": CENTER_LR, "warmup_frac": 0.01}),
    "warmup20pct": ("lr 1.5e-3, 20% warmup", {"lr": CENTER_LR, "warmup_frac": 0.2}),
    "batch512": ("lr 1.5e-3, half the batch (2x steps)", {"lr": CENTER_LR, "batch_tokens": BASE_BATCH_TOKENS // 2}),
    "batch2048": ("lr 1.5e-3, double the batch (half the steps)", {"lr": CENTER_LR, "batch_tokens": BASE_BATCH_TOKENS * 2}),
    "random": ("lr 1.5e-3, windows drawn with replacement (the old sampler)", {"lr": CENTER_LR, "sampling": "random"}),
    "random-seed2": ("as random, another seed (noise)", {"lr": CENTER_LR, "sampling": "random", "seed": 2024}),
}


def arm_settings(name: str, tokens: int) -> dict:
    settings = {**BASELINE, **ARMS[name][1]}
    settings["steps"] = max(1, tokens // settings["batch_tokens"])
    settings["warmup_steps"] = max(1, round(settings["warmup_frac"] * settings["steps"]))
    return settings


def train_command(out_dir: Path, name: str, settings: dict) -> list[str]:
    sets = {
        "train.run_name": name, "train.runs_dir": out_dir / RUNS_DIR, "train.data_dir": out_dir / "data",
        "train.tokenizer_model": out_dir / "tokenizer" / "spm.model", "train.seed": settings["seed"],
        "train.seq_len": SEQ_LEN, "train.micro_batch_size": min(MICRO_BATCH, settings["batch_tokens"] // SEQ_LEN),
        "train.tokens_per_step": settings["batch_tokens"], "train.max_steps": settings["steps"],
        "train.lr": settings["lr"], "train.min_lr_ratio": settings["min_lr_ratio"], "train.warmup_steps": settings["warmup_steps"],
        "train.sampling": settings["sampling"], "train.eval_interval": 10**9, "train.eval_tokens": 10**9,  # all of val, once at the end
        "train.checkpoint_interval": 10**9, "train.log_interval": 50, "train.checks.overfit_microset.enabled": "false",
        "train.budget.hourly_rate": 0.0,
    }
    command = [sys.executable, "-m", "trainer.train", "--model_config", str(REPO / "configs/model_smoke.yaml"),
               "--train_config", str(REPO / "configs/train_smoke.yaml")]
    for key, value in sets.items():
        command += ["--set", f"{key}={value}"]
    return command


def final_eval(run_dir: Path) -> dict:
    evals = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines() if '"eval"' in line]
    if not evals:
        raise UserError(f"{run_dir} has no eval in metrics.jsonl: the arm did not finish (see {run_dir / TRAIN_LOG}).")
    return evals[-1]


def run_arm(out_dir: Path, name: str, settings: dict) -> dict:
    run_dir = out_dir / run_rel(name)
    if (run_dir / FINAL_DIR).is_dir() and (run_dir / METRICS_FILE).is_file():  # finished earlier: reuse
        return {"name": name, **settings, **_result(run_dir), "seconds": None}  # None: not run this time
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    started = time.time()
    result = subprocess.run(train_command(out_dir, name, settings), cwd=out_dir, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"arm {name} failed (exit {result.returncode}): {result.stderr.strip()[-600:]}")
    return {"name": name, **settings, **_result(run_dir), "seconds": round(time.time() - started, 1)}


def _result(run_dir: Path) -> dict:
    record = final_eval(run_dir)
    status = json.loads((run_dir / STATUS_FILE).read_text())
    return {"val_loss": record["val_loss"], "val_bpb": record.get("val_bpb"), "tokens_seen": record["tokens_seen"],
            "train_seconds": round(status["elapsed_s"], 1)}


def markdown_table(results: list[dict]) -> str:
    base = next((r for r in results if r["name"] == "baseline"), None)
    lines = ["| arm | what changes | lr | final lr | warmup steps | batch tokens | steps | sampling | val loss | bits/byte | vs baseline (bits/byte) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: r["val_bpb"] if r["val_bpb"] is not None else r["val_loss"]):
        delta = "-" if base is None or r is base or r["val_bpb"] is None else f"{r['val_bpb'] - base['val_bpb']:+.4f}"
        bpb = "-" if r["val_bpb"] is None else f"{r['val_bpb']:.4f}"
        lines.append(f"| {r['name']} | {ARMS[r['name']][0]} | {r['lr']:g} | {r['min_lr_ratio']:.0%} | {r['warmup_steps']} | "
                     f"{r['batch_tokens']} | {r['steps']} | {r['sampling']} | {r['val_loss']:.4f} | {bpb} | {delta} |")
    return "\n".join(lines)


@cli_main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python bench/recipe_study.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default=f"{RUNS_DIR}/recipe_study", help="data, tokenizer and one run folder per arm (finished arms are reused)")
    add_deprecated_alias(parser, "--out_dir", "--output_dir")
    parser.add_argument("--tokens", type=int, default=120 * BASE_BATCH_TOKENS, help="training tokens per arm (equal for all)")
    parser.add_argument("--jobs", type=int, default=2, help="arms trained at the same time (one CPU thread each)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of: {', '.join(ARMS)}")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.arms.split(",") if n.strip()]
    unknown = [n for n in names if n not in ARMS]
    if unknown or args.tokens < BASE_BATCH_TOKENS * 2 or args.jobs < 1:
        raise UserError(f"--arms {unknown} unknown (known: {', '.join(ARMS)}), or --tokens below {BASE_BATCH_TOKENS * 2}, or --jobs below 1.")
    out_dir = Path(args.output_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    from trainer.corpus.smoke_data import ensure_smoke_data

    # train.bin a little over one arm's tokens: epoch sampling sees (nearly) every window once
    train_tokens = int(args.tokens * 1.02) + SEQ_LEN
    print(f"data: {train_tokens:,} train / {train_tokens // 10:,} val tokens in {out_dir / 'data'}", flush=True)
    ensure_smoke_data(out_dir / "data", out_dir / "tokenizer", 4096, train_tokens=train_tokens, val_tokens=train_tokens // 10)

    started = time.time()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {name: pool.submit(run_arm, out_dir, name, arm_settings(name, args.tokens)) for name in names}
        results = []
        for name, future in futures.items():
            results.append(future.result())
            r = results[-1]
            print(f"{name}: val loss {r['val_loss']:.4f}, bits/byte {r['val_bpb']}, {r['seconds']} s", flush=True)
    record = {"command": " ".join(["python", "bench/recipe_study.py", *(argv if argv is not None else sys.argv[1:])]),
              "tokens_per_arm": args.tokens, "seq_len": SEQ_LEN, "model_config": "configs/model_smoke.yaml",
              "wall_seconds": round(time.time() - started, 1), "train_seconds_all_arms": round(sum(r["train_seconds"] for r in results), 1),
              "results": results}
    (out_dir / "recipe_study.json").write_text(json.dumps(record, indent=2) + "\n")
    print()
    print(markdown_table(results))
    print(f"\nwrote {out_dir / 'recipe_study.json'} ({record['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
