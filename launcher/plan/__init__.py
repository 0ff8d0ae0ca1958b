"""Choosing the box by dollars per run: ``launcher plan`` and the offer ``launcher up`` rents.

    rank.py        the plan itself, a pure function: offers + target tokens + memory + ledger -> ranked rows
    speed.py       tokens/s per GPU type and count: measured (the throughput ledger) beats estimated (roofline)
    memory.py      the GPU memory a run needs (weights, grads, AdamW states, activations of a micro-batch)
    plan_json.py   the JSON contract of ``launcher plan --json`` (docs/plan-json.md): its one owner
    candidates.py  the config side: listing every candidate's offers, and a candidates config resolved to the recorded box
    make.py        gathers the plan's inputs (configs, ledger, the run's progress, offers) and ranks
    rent.py        `launcher up` with box.kind plan: pick the cheapest run within budget (or --offer), say why, rent
    ledger.py      the throughput ledger's records: built from a run's throughput.json, read back for the plan
    canary.py      after the benchmark: the ledger append, and measured speed against the plan's on a new box
    slow_hosts.py  the hosts later plans avoid (.launcher/avoided_hosts.json)

Only candidates.py talks to providers; rank.py, speed.py and memory.py do no I/O, so they are
tested with tables and benchmarked over 10,000 offers (bench/plan_bench.py).
"""
