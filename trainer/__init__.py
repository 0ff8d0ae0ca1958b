"""The on-GPU half. The pipeline, one command per step (``python -m trainer.<step>``), in order:

    tokenizer.py   train the 32k SentencePiece BPE tokenizer on a sample of the mix   -> corpus/
    data.py        tokenize the mix into train.bin / val.bin (uint16 memmaps)          -> corpus/
    model.py       the model's exact parameter count for a config                      -> modeling/
    benchmark.py   measure tokens/s, MFU and memory (throughput.json)                  -> bench/
    cost.py        project the run's price; refuse one over budget (cost.json)         -> bench/
    nccl_probe.py  all-reduce across the box's GPUs before a multi-GPU run             -> bench/
    train.py       train (checks, exact resume, checkpoints, eval as it goes)          -> training/
    eval.py        validation loss, bits per byte, samples; the report card            -> evaluation/
    plot.py        the loss curve from metrics.jsonl                                   -> evaluation/
    export.py      a Hugging Face LlamaForCausalLM folder with its tokenizer           -> modeling/
    show_config.py validate configs and print them resolved
    cli_args.py    the flags these commands share

Each command module is only the entry point; its step's code lives in the room it names:

    corpus/      sources, the mix, the tokenizer's training, the memmaps and reading them back
    modeling/    the Llama-style model, its fused loss, Hugging Face conversion and export
    training/    the loop, the step, batches, checkpoints, schedule, precision, checks, logs
    evaluation/  evaluation, bits per byte, the loss plot, lm-eval tasks, the report card
    bench/       the throughput benchmark, the cost projection, the NCCL probe

What the launcher shares with it (configs, errors, manifests, the run folder's names) lives in
``runcontract``. Nothing here imports ``launcher`` (tests/runcontract/test_import_rules.py).
"""
