"""Training (``trainer.train``): the loop and everything one step of it needs.

    loop.py           prepare (checks, plan, cost gate, model; resume) -> overfit check -> fit -> finish
    step.py           the training step, shared with the benchmark and bench/
    batches.py        training and validation windows of the token memmaps
    schedule.py       learning rate: warmup, then cosine decay to a floor
    precision.py      device and autocast
    cpu_threads.py    how many CPU threads torch may use on a shared machine
    checkpoint.py     checkpoints written atomically, manifest last; found and loaded back
    stream_resume.py  resume across hardware: the global batch and the sample stream kept
    overfit_check.py  the micro-set check before the main loop
    val_loss.py       in-training validation: loss and bits per byte, per source
    metrics_log.py    train.log, metrics.jsonl, status.json
    trackers.py       TensorBoard / Weights & Biases through accelerate
    run_control.py    the run-folder lock, stop signals, errors from other ranks
    detach.py         re-run the command in tmux/screen so it survives the SSH session
"""
