"""Evaluation (``trainer.eval``, ``trainer.plot``).

    evaluate.py              a checkpoint's validation loss, perplexity, bits per byte and samples
    bits_per_byte.py         loss in a unit that does not depend on the tokenizer
    loss_plot.py             the loss curve PNG from metrics.jsonl
    lm_eval_tasks.py         standard benchmarks through lm-evaluation-harness on the exported model
    report_card.py           those scores beside published baselines (report_baselines.yaml)
"""
