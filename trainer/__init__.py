"""The on-GPU half: tokenizer, data, model, training, benchmark, cost, eval, export.

Entry points are plain commands: ``python -m trainer.<step>``.

What the launcher shares with it (configs, errors, manifests, the run folder's names) lives in
``runcontract``. Nothing here imports ``launcher``.
"""
