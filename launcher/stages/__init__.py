"""``launcher run``'s stages, one module per stage, in the order launcher/run/runner.py runs them:

    sync -> setup -> [restore] -> [nccl_probe] -> tokenizer -> data -> benchmark -> cost -> train

    sync.py        the project folder to the box (rsync over ssh, else SFTP)
    setup.py       the box's Python environment (infra/bootstrap.sh)
    restore.py     --resume: the run folder and its newest verified checkpoint from the store
    nccl_probe.py  several GPUs: can they all-reduce (trainer.nccl_probe)
    tokenizer.py   trainer.tokenizer, skipped when its stamp matches
    data.py        trainer.data, likewise
    benchmark.py   trainer.benchmark, then the throughput ledger and the canary
    cost.py        trainer.cost: the budget gate
    train.py       the trainer and the store agent, side by side in a detached session

How they run (the shared context, stamps, output, status) is launcher/run/.
"""
