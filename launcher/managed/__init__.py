"""Managed runs (``launcher run --managed``): keep a run going to its target across boxes.

A managed run is a loop over the same verbs a person uses (up, run --resume, status, down),
driven by what the store and the provider say, not by memory, so every decision can be made
again after the controller is killed:

    controller.py   the loop: watch, diagnose, recover, finish
    diagnosis.py    what is wrong: the box lost, the trainer hung, the run failing on its own
    recovery.py     end the old box through its provider, choose and rent the next one
    choice.py       which offer to rent next (the plug-in point for ``launcher plan``'s ranking)
    spend.py        the spend ledger in the store: one total budget across every box
    fence.py        the fencing generation in the store: never two trainers on one run
    interval.py     a checkpoint interval from the checkpoint time and the interruption rate
"""
