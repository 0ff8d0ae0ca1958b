"""The on-GPU half: tokenizer, data, model, training, benchmark, cost, eval, export.

Entry points are plain commands: ``python -m trainer.<step>``.

The modules ``errors``, ``atomic``, ``manifest`` and ``config`` import no torch: the launcher
(which runs on a laptop) uses them too. Keep them that way. Nothing here imports ``launcher``.
"""
