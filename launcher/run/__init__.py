"""How ``launcher run`` runs its stages (launcher/stages/) on a box.

    start.py              a run started on a box: checks, every stage, the run recorded, the hints
                          (``launcher run`` and the managed controller both start runs here)
    runner.py             the ordered list of stages and how a list is run (skips, Ctrl-C, failures)
    context.py            what every stage reads: config, box, console, the run's paths and commands
    stamps.py             the hashes that let the tokenizer, data and benchmark stages be skipped
    step_output.py        a trainer step on the box, its output shown as it comes and logged
    run_status.py         status.json's phases as the stages write them; a run already finished
    store_and_secrets.py  what the box gets before anything starts: store.json and the secrets file
    progress.py           the bars of the long stages (sync, bootstrap)
"""
