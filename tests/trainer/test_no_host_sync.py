"""Issue 16, lever 6: between optimizer steps the training loop reads nothing back from the
device except at log (and eval / checkpoint) steps. On a GPU every ``.item()``, ``float(t)``,
``bool(t)``, ``.tolist()``, ``.cpu()`` or ``.numpy()`` waits for the queue to drain; on CPU a
shim on ``torch.Tensor`` counts those calls made from the project's code (trainer/), and an
optimizer-step hook marks the step boundaries, in a real ``python -m trainer.train`` run."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.harness.paths import REPO
from tests.harness.trainer_runs import make_data, subprocess_env, tiny_args


SHIM = r'''
import json, sys
import torch

TRAINER = sys.argv[1]
events = []

def counted(name, original):
    def wrapper(self, *args, **kwargs):
        caller = sys._getframe(1)
        if caller.f_code.co_filename.startswith(TRAINER):
            events.append(["read", name, caller.f_code.co_filename[len(TRAINER) + 1:], caller.f_lineno])
        return original(self, *args, **kwargs)
    return wrapper

for name in ("item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__"):
    setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
from torch.optim.optimizer import register_optimizer_step_post_hook
register_optimizer_step_post_hook(lambda optimizer, args, kwargs: events.append(["step"]))

from trainer.train import main
try:
    main(sys.argv[3:])
finally:
    with open(sys.argv[2], "w") as out:
        json.dump(events, out)
'''


def reads_after_each_step(events: list) -> dict[int, list]:
    """{k: reads between optimizer step k and step k+1 (or the end)}; reads before step 1 are setup."""
    windows: dict[int, list] = {}
    step = 0
    for event in events:
        if event[0] == "step":
            step += 1
            windows[step] = []
        elif step > 0:
            windows[step].append(event[1:])
    return windows


def test_no_device_reads_between_optimizer_steps_except_log_steps(tmp_path):
    make_data(tmp_path / "data")
    events_path = tmp_path / "events.json"
    args = tiny_args(tmp_path, "nosync", "--set", "train.checks.overfit_microset.enabled=false", steps=12,
                     ) + ["--set", "train.log_interval=4", "--set", "train.eval_interval=6", "--set", "train.checkpoint_interval=12"]
    result = subprocess.run([sys.executable, "-c", SHIM, str(REPO / "trainer"), str(events_path), *args],
                            cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    windows = reads_after_each_step(json.loads(events_path.read_text()))
    assert sorted(windows) == list(range(1, 13))  # twelve optimizer steps, 2 micro-batches each
    reporting = {4, 6, 8, 12}  # log every 4, eval every 6, checkpoint and end at 12
    for step in range(1, 12):
        if step not in reporting:
            assert windows[step] == [], f"after step {step}: {windows[step]}"
    for step in reporting:  # the shim does see the reads that are allowed
        assert windows[step], f"no read at reporting step {step}"
    assert len([read for read in windows[4] if read[1] == "training/step.py"]) == 1  # one host read per log step
