"""The contract between the two halves: what the launcher (laptop) and the trainer (GPU box)
both read and write, and nothing else.

Named for what it holds: the run folder's layout and states (``run_folder``), typed models of
its JSON files (``run_files``), the budget and the money spent (``budget``), the configs
(``config``, ``configlib``), the manifests that say a folder is whole (``manifest``), the
atomic writes that keep every file whole (``atomic``), the errors and exit codes both halves
raise (``errors``), and how a run is detached from its terminal (``detached``). No torch, no
numpy, and it imports neither ``launcher`` nor ``trainer``: the laptop's install carries it
beside the launcher (tests/runcontract/test_packaging.py checks that).
"""
