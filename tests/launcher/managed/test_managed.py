"""Managed runs, the fast parts: the diagnosis table, the spend ledger, the fence as the real agent
process obeys it, the budget rule for renting, Young's interval, the choice of the next offer,
and the fake Vast's preemption seen through the real client. The whole loop with the real sshd
and S3 server is tests/launcher/managed/test_managed_run.py (slow)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from launcher.agent import store_config_json
from launcher.config import AgentConfig, LauncherConfig, StorageConfig, load_launcher_config
from launcher.managed import fence
from launcher.managed.choice import next_offer
from launcher.managed.controller import BudgetExhausted, Controller
from launcher.managed.diagnosis import BOX_LOST, FINISHED, HEALTHY, RUN_FAILED, TRAINER_HUNG, Observation, diagnose
from launcher.managed.interval import interval_steps, young_interval_s
from launcher.managed.spend import SpendLedger
from launcher.providers.base import Instance, Offer
from launcher.providers.registry import make_provider
from launcher.state import load_state, update_state
from launcher.store.factory import open_store
from runcontract.run_files import StatusFile
from tests.harness.fake_providers import API_KEY, FakeRunPod, FakeVast, placeholder_ssh_key
from tests.harness.launcher_cli import wait_for
from tests.harness.paths import REPO as ROOT
from tests.harness.stores import make_checkpoint

RUNNING_BOX = Instance(id="1", provider="vastai", ssh_host="h", ssh_port=22, state="running")


def running(**status) -> StatusFile:
    return StatusFile.model_construct(**{"state": "running", "phase": "training", "progress": None, **status})


@pytest.mark.parametrize("obs, kind", [
    (Observation(instance=None), BOX_LOST),                                                     # gone
    (Observation(instance=Instance(id="1", provider="vastai", state="stopped", raw_state="stopped")), BOX_LOST),  # outbid
    (Observation(instance=RUNNING_BOX, ssh_ok=False, ssh_down_for_s=301), BOX_LOST),              # SSH past the grace
    (Observation(instance=RUNNING_BOX, ssh_ok=False, ssh_down_for_s=10), HEALTHY),                # SSH within the grace
    (Observation(instance=None, provider_error="HTTP 503", ssh_ok=False, ssh_down_for_s=10), HEALTHY),  # no verdict
    (Observation(instance=RUNNING_BOX, status=running(), session_alive=True, status_age_s=1801), TRAINER_HUNG),
    (Observation(instance=RUNNING_BOX, status=running(), session_alive=True, status_age_s=5), HEALTHY),
    (Observation(instance=RUNNING_BOX, status=running(state="failed", phase="failed", progress="failed during data"),
                 exit_code=1, stderr_tail="boom"), RUN_FAILED),
    (Observation(instance=RUNNING_BOX, status=running(), session_alive=False), RUN_FAILED),      # process gone
    (Observation(instance=RUNNING_BOX, status=None, session_alive=False), RUN_FAILED),          # no process, no status: stderr log only
    (Observation(instance=RUNNING_BOX, status=None, session_alive=False, trainer_traces=False), BOX_LOST),  # the run folder gone
    (Observation(instance=RUNNING_BOX, status=None, session_alive=True), HEALTHY),              # stages starting
    (Observation(instance=RUNNING_BOX, status=running(state="finished")), FINISHED),
])
def test_diagnosis_tells_the_three_failure_kinds_apart(obs, kind):
    assert diagnose(obs, ssh_grace_s=300, hang_s=1800).kind == kind


def test_the_same_failure_has_the_same_signature_and_another_does_not():
    def failed(tail):
        obs = Observation(instance=RUNNING_BOX, status=running(state="failed", phase="failed", progress="failed during data"),
                          exit_code=1, stderr_tail=tail)
        return diagnose(obs, 300, 1800).signature
    assert failed("x\nOSError: disk full") == failed("y\nOSError: disk full") != failed("ValueError: bad")


def test_spend_ledger_totals_boxes_and_interruptions_and_appends_each_record_once(tmp_path):
    store = open_store(StorageConfig(url=f"file://{tmp_path / 'store'}"), tmp_path)
    ledger = SpendLedger(store, "demo")
    ledger.rented("vastai", "7", 0.36, start=1000.0)
    ledger.rented("vastai", "7", 0.36, start=1000.0)  # a restarted controller making the same decision again
    ledger.ended("vastai", "7", 0.36, 1000.0, 1000.0 + 1800, "lost")
    ledger.ended("vastai", "7", 0.36, 1000.0, 1000.0 + 9999, "lost")  # ignored: already ended
    ledger.rented("vastai", "8", 0.40, start=3000.0)
    SpendLedger(store, "other").rented("vastai", "9", 9.0, start=0.0)  # another run's box is not this run's spend
    spend = ledger.read()
    assert [(b.id, b.state) for b in spend.boxes] == [("7", "ended"), ("8", "open")]
    assert spend.boxes[0].cost() == pytest.approx(0.18)
    assert spend.total(now=3000.0 + 900) == pytest.approx(0.18 + 0.10)
    assert spend.interruptions == 1
    assert len(list(store.list("_ledgers/spend/"))) == 4


def test_young_interval():
    assert young_interval_s(checkpoint_s=30, mtbf_s=3600 * 4) == pytest.approx((2 * 30 * 14400) ** 0.5)
    assert interval_steps(checkpoint_s=30, interruptions_per_hour=0.25, step_s=0.5) == round((2 * 30 * 14400) ** 0.5 / 0.5)
    with pytest.raises(ValueError):
        young_interval_s(0, 10)


def test_next_offer_skips_failed_hosts_cheapest_first():
    offers = [Offer("vastai", str(i), "RTX 4090", 1, price, location=loc) for i, (price, loc) in
              enumerate([(0.3, "Quebec, CA"), (0.37, "Texas, US"), (0.46, "Norway, NO")])]
    assert next_offer(offers, []).location == "Quebec, CA"
    assert next_offer(offers, ["Quebec, CA"]).location == "Texas, US"
    assert next_offer(offers, ["Quebec, CA", "Texas, US", "Norway, NO"]) is None


# -- the fence, obeyed by the real agent process --------------------------------------------------
TRAINER = r"""
import json, os, signal, sys, time
run_dir = sys.argv[1]
def status(state):
    tmp = os.path.join(run_dir, ".status.json.tmp")
    with open(tmp, "w") as f:
        json.dump({"state": state, "phase": "training", "pid": os.getpid(), "step": 1, "updated": time.time()}, f)
    os.replace(tmp, os.path.join(run_dir, "status.json"))
def stop(*_):
    status("stopped"); sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    status("running"); time.sleep(0.1)
"""


def test_a_stale_box_writes_no_checkpoint_to_the_store_and_stops_its_trainer(tmp_path):
    project = tmp_path / "project"
    run_dir = project / "runs" / "demo"
    run_dir.mkdir(parents=True)
    storage = StorageConfig(url=f"file://{tmp_path / 'store'}")
    store = open_store(storage, project)
    assert fence.advance(store, "demo", "vastai 1") == 1
    config = LauncherConfig(storage=storage, agent=AgentConfig(sync_interval=0.2))
    (run_dir / "store.json").write_text(store_config_json(config, "demo", None, fence_generation=1))
    trainer = subprocess.Popen([sys.executable, "-c", TRAINER, str(run_dir)])
    agent = subprocess.Popen([sys.executable, "-m", "launcher.agent", "mirror", "--run_dir", str(run_dir), "--store_config",
                              str(run_dir / "store.json"), "--project_root", str(project)],
                             cwd=project, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        make_checkpoint(run_dir, 5)
        wait_for(lambda: store.latest_checkpoint("demo"), 60, "the current box's checkpoint in the store", 0.2)
        assert fence.advance(store, "demo", "vastai 2") == 2  # another box owns the run now
        make_checkpoint(run_dir, 10)
        out, _ = agent.communicate(timeout=60)
        assert agent.returncode == 3, out
        assert "fencing generation is 2, this box's is 1" in out, out
        assert [c.step for c in store.checkpoints("demo") if c.complete] == [5]  # step 10 never became a stored checkpoint
        assert (run_dir / "fenced").is_file()  # the trainer's cue to write no further checkpoint
        assert trainer.wait(timeout=30) == 0  # stopped (SIGTERM)
    finally:
        for proc in (agent, trainer):
            if proc.poll() is None:
                proc.kill()


# -- renting within one total budget ---------------------------------------------------------------
def _controller(tmp_path: Path, fake: FakeVast, **budget) -> Controller:
    key = placeholder_ssh_key(tmp_path)
    config = LauncherConfig.model_validate({
        "box": {"kind": "vastai", "identity_file": str(key),
                "vastai": {"api_base": fake.api_base, "poll_interval_s": 0.05, "terminate_timeout_s": 10, "ready_timeout_s": 10}},
        "run": {"name": "demo"}, "storage": {"url": f"file://{tmp_path / 'store'}"},
        "budget": {"hourly_rate": 0, "max_cost": 5, **budget}, "managed": {"startup_s": 3600, "poll_s": 0.01}})
    return Controller(config, None, tmp_path, Console(file=open("/dev/null", "w")))


def _started_box(tmp_path: Path, controller: Controller, suffix: str) -> dict:
    """A box rented from the fake and recorded as the one the run was started on; its state record."""
    provider = make_provider(controller.config)
    made = provider.create(provider.offers()[0], "ssh-ed25519 AAAA test", f"llm-box-demo-{suffix}")
    record = {**made.to_dict(), "rented_at": time.time()}
    update_state(tmp_path, instance=record, managed={"run": "demo", "started_on": made.id})
    return record


def test_no_new_box_when_the_budget_left_cannot_reach_the_next_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("VAST_API_KEY", API_KEY)
    with FakeVast() as fake:
        controller = _controller(tmp_path, fake, max_total_cost=1.0)
        now = time.time()
        controller.ledger.rented("vastai", "1", 0.5, now - 3600 * 1.5)  # $0.75 spent: $0.25 left
        controller.ledger.ended("vastai", "1", 0.5, now - 3600 * 1.5, now, "lost")
        with pytest.raises(BudgetExhausted, match=r"\$0.2500 of the run's \$1.00 budget is left"):
            controller.rent()  # the cheapest offer needs ~$0.3 for an hour of startup
        assert fake.calls("PUT") == []  # nothing rented


def test_outbid_vast_instance_reads_as_stopped_and_is_destroyed_and_metered(tmp_path, monkeypatch):
    monkeypatch.setenv("VAST_API_KEY", API_KEY)
    with FakeVast() as fake:
        controller = _controller(tmp_path, fake)
        provider = make_provider(controller.config)
        offer = provider.offers()[0]
        instance = provider.create(offer, "ssh-ed25519 AAAA test", "llm-box-demo-abc123")
        fake.outbid(int(instance.id))
        assert provider.get(instance.id).state == "stopped"
        assert int(instance.id) in fake.alive()  # stopped still exists, and bills its disk
        from launcher.managed.recovery import end_box

        update_state(tmp_path, instance={**instance.to_dict(), "rented_at": time.time()})
        end_box(tmp_path, controller.config, {**instance.to_dict(), "rented_at": time.time()}, controller.ledger, "lost",
                controller.console, avoid_host=True)
        assert fake.alive() == [] and fake.billed(int(instance.id)) > 0
        spend = controller.ledger.read()
        assert spend.interruptions == 1 and spend.boxes[0].end is not None
        assert json.loads((tmp_path / ".launcher" / "state.json").read_text())["managed"]["avoid_hosts"] == [offer.location]


# -- the account-wide watch -------------------------------------------------------------------------
def test_status_all_lists_every_instance_with_its_run_and_down_orphans_ends_only_orphans(tmp_path):
    from tests.harness.launcher_cli import assert_clean_error, copy_project, launcher

    project = copy_project(tmp_path / "project")
    env = {"VAST_API_KEY": API_KEY, "RUNPOD_API_KEY": API_KEY, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    with FakeVast() as vast, FakeRunPod() as runpod:
        key = placeholder_ssh_key(tmp_path)
        config = project / "configs" / "vast.yaml"
        config.write_text(json.dumps({
            "box": {"kind": "vastai", "identity_file": str(key),
                    "vastai": {"api_base": vast.api_base, "poll_interval_s": 0.05, "terminate_timeout_s": 10},
                    "runpod": {"api_base": runpod.rest_base, "graphql_url": runpod.graphql_url}},
            "run": {"name": "demo"}, "storage": {"url": "file://.launcher/store"}}))
        cfg = load_launcher_config(config)
        monkey_env = dict(os.environ)
        os.environ.update(env)
        try:
            vast_client, pod_client = make_provider(cfg), make_provider(cfg.model_copy(update={"box": cfg.box.model_copy(update={"kind": "runpod"})}))
            offers = vast_client.offers()
            recorded = vast_client.create(offers[0], "ssh-ed25519 AAAA k", "llm-box-demo-aaaaaa")
            in_ledger = vast_client.create(offers[1], "ssh-ed25519 AAAA k", "llm-box-other-bbbbbb")
            orphan = pod_client.create(pod_client.offers()[0], "ssh-ed25519 AAAA k", "llm-box-gone-cccccc")
            theirs = vast_client.create(offers[2], "ssh-ed25519 AAAA k", "my-notebook")
            SpendLedger(open_store(cfg.storage, project), "other").rented("vastai", in_ledger.id, 0.4, time.time())
        finally:
            os.environ.clear()
            os.environ.update(monkey_env)
        update_state(project, config_path=str(config), instance={**recorded.to_dict(), "api_base": vast.api_base})

        listed = launcher(project, "status", "--all", "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        rows = {r["id"]: r for r in json.loads(listed.stdout)["instances"]}
        assert set(rows) == {recorded.id, in_ledger.id, orphan.id, theirs.id}
        assert {i: (r["run"], r["orphan"]) for i, r in rows.items()} == {
            recorded.id: ("demo", False), in_ledger.id: ("other", False), orphan.id: ("gone", True), theirs.id: (None, False)}
        assert rows[orphan.id]["provider"] == "runpod" and rows[orphan.id]["hourly_price"] == pytest.approx(0.34)
        table = launcher(project, "status", "--all", env=env)
        assert "ORPHAN" in table.stdout and "1 orphan(s)" in table.stdout, table.stdout

        refused = launcher(project, "down", "--orphans", env=env)  # stdin is no terminal: no silent teardown
        assert_clean_error(refused, "pass --yes")
        assert runpod.alive() == [orphan.id]
        ended = launcher(project, "down", "--orphans", "--yes", env=env)
        assert ended.returncode == 0, ended.stdout + ended.stderr
        assert runpod.alive() == [] and sorted(vast.alive()) == sorted(int(i) for i in (recorded.id, in_ledger.id, theirs.id))
        assert "billing stopped" in ended.stdout


def test_interruptible_vast_bids_on_create_and_an_outbid_box_gets_one_raise_up_to_max_bid(tmp_path, monkeypatch):
    monkeypatch.setenv("VAST_API_KEY", API_KEY)
    with FakeVast() as fake:
        controller = _controller(tmp_path, fake)
        vast = controller.config.box.vastai.model_copy(update={"interruptible": True, "bid_price": 0.30, "max_bid": 0.45})
        controller.config = controller.config.model_copy(update={"box": controller.config.box.model_copy(update={"vastai": vast})})
        provider = make_provider(controller.config)
        offer = provider.offers()[0]
        [search] = fake.calls("POST", "/bundles/")
        assert search.body["type"] == "bid"
        instance = provider.create(offer, "ssh-ed25519 AAAA test", "llm-box-demo-abc123")
        assert fake.calls("PUT", r"/asks/")[-1].body["price"] == 0.30
        record = {**instance.to_dict(), "rented_at": time.time()}
        update_state(tmp_path, instance=record)
        fake.outbid(int(instance.id), winning_bid=0.40)
        controller.last_observation = Observation(instance=provider.get(instance.id))
        assert controller.raise_bid(record)  # raised once, to the cap
        assert fake.calls("PUT", "bid_price")[-1].body == {"client_id": "me", "price": 0.45}
        wait_for(lambda: provider.get(instance.id).state == "running", 10, "the instance to run again", 0.1)
        fake.outbid(int(instance.id), winning_bid=0.50)
        controller.last_observation = Observation(instance=provider.get(instance.id))
        assert not controller.raise_bid(record)  # once per box: now it is recovered like any lost box
        assert int(instance.id) in fake.alive()


def test_a_create_in_flight_when_the_controller_was_killed_is_found_by_name_not_rented_again(tmp_path, monkeypatch):
    from launcher.managed.recovery import adopt_pending
    from runcontract.errors import UserError

    monkeypatch.setenv("VAST_API_KEY", API_KEY)
    with FakeVast() as fake:
        fake.list_lag = 3  # the list lags the create: three looks miss it (issue 23)
        controller = _controller(tmp_path, fake)
        controller.config.box.lost_create_search_s = 30
        provider = make_provider(controller.config)
        # the controller wrote the name, sent the create, and was killed before it could record the answer
        update_state(tmp_path, managed={"run": "demo", "pending_name": "llm-box-demo-0a1b2c", "pending_since": time.time() - 5})
        made = provider.create(provider.offers()[0], "ssh-ed25519 AAAA test", "llm-box-demo-0a1b2c")
        record = adopt_pending(controller.config, tmp_path, controller.console)
        assert record["id"] == made.id and record["rented_at"] <= time.time() - 5
        state = json.loads((tmp_path / ".launcher" / "state.json").read_text())
        assert state["instance"]["id"] == made.id and "pending_name" not in state["managed"]
        assert len(fake.calls("PUT", r"/asks/")) == 1
        # a name no list shows within the window: never concluded absent; recorded unconfirmed, the
        # controller stops with the check command instead of renting a second box
        controller.config.box.lost_create_search_s = 0.3
        update_state(tmp_path, instance=None, managed={"run": "demo", "pending_name": "llm-box-demo-999999",
                                                       "pending_since": time.time()})
        with pytest.raises(UserError, match="could not confirm whether an instance was created"):
            adopt_pending(controller.config, tmp_path, controller.console)
        state = json.loads((tmp_path / ".launcher" / "state.json").read_text())
        assert state["instance"]["state"] == "unconfirmed" and state["instance"]["name"] == "llm-box-demo-999999"
        assert "pending_name" not in state["managed"]
        assert len(fake.calls("PUT", r"/asks/")) == 1
        # nothing in flight: nothing adopted
        update_state(tmp_path, instance=None, managed={"run": "demo"})
        assert adopt_pending(controller.config, tmp_path, controller.console) is None


def test_checkpoint_interval_suggestion_from_the_trainers_log():
    from launcher.managed.interval import measured_checkpoint_s, suggestion

    log = ("[12:00:01] periodic checkpoint: runs/x/checkpoints/step_000100 (28.0 s)\n"
           "[12:10:01] periodic checkpoint: runs/x/checkpoints/step_000200 (32.0 s); removed 1 old\n")
    assert measured_checkpoint_s(log) == pytest.approx(30.0)
    line = suggestion(log, step_s=0.5, interruptions_per_hour=0.25, current_steps=1000)
    assert "930 s = 1859 steps" in line and "train.checkpoint_interval is 1000" in line
    assert suggestion("", 0.5, 0.25, 1000) is None and suggestion(log, 0.5, None, 1000) is None


def test_the_same_run_failure_twice_ends_the_box_and_stops_with_the_reason(tmp_path, monkeypatch):
    from launcher.managed.diagnosis import Diagnosis
    from runcontract.errors import UserError

    monkeypatch.setenv("VAST_API_KEY", API_KEY)
    with FakeVast() as fake:
        controller = _controller(tmp_path, fake)
        record = _started_box(tmp_path, controller, "aaaaaa")
        failure = Diagnosis(RUN_FAILED, "the trainer failed (exit code 1) during data: OSError: disk full", "data|1|OSError: disk full")
        assert controller.act(failure, record) is None  # the first time: retried on the same box
        assert controller.managed()["started_on"] is None and int(record["id"]) in fake.alive()
        other = Diagnosis(RUN_FAILED, "the trainer failed (exit code 1) during training: ValueError", "training|1|ValueError")
        assert controller.act(other, record) is None  # a different failure is retried too
        with pytest.raises(UserError, match="failed twice the same way.*disk full"):
            controller.act(failure, record)
        assert fake.alive() == []  # ended through the provider
        assert controller.ledger.read().boxes[0].reason == "failed" and controller.ledger.read().interruptions == 0


def test_managed_needs_a_rented_box_kind_and_says_so(tmp_path):
    from tests.harness.launcher_cli import assert_clean_error, copy_project, launcher

    project = copy_project(tmp_path / "project")
    result = launcher(project, "run", "--managed", env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert_clean_error(result, "--managed rents and replaces boxes: box.kind must be runpod or vastai, not local")


def test_a_vanished_host_is_lost_and_ending_it_is_confirmed(tmp_path, monkeypatch):
    from launcher.managed.recovery import end_box

    monkeypatch.setenv("VAST_API_KEY", API_KEY)
    with FakeVast() as fake:
        controller = _controller(tmp_path, fake)
        provider = make_provider(controller.config)
        made = provider.create(provider.offers()[0], "ssh-ed25519 AAAA test", "llm-box-demo-dddddd")
        fake.vanish(int(made.id))  # the host died: the instance is gone from the API
        assert diagnose(Observation(instance=provider.get(made.id)), 300, 1800).kind == BOX_LOST
        record = {**made.to_dict(), "rented_at": fake.created_at[int(made.id)]}
        update_state(tmp_path, instance=record)
        end_box(tmp_path, controller.config, record, controller.ledger, "lost", controller.console, avoid_host=True)
        assert fake.alive() == [] and controller.ledger.read().interruptions == 1
        # the ledger counts the box until the launcher confirmed it gone: never less than the provider billed
        assert controller.ledger.read().total() >= fake.billed(int(made.id))


def test_the_next_box_is_the_plans_cheapest_run_on_a_host_that_has_not_failed():
    from launcher.managed.choice import next_offer, plan_ranking
    from launcher.plan.rank import RunNeeds
    from launcher.plan.speed import SpeedModel
    from launcher.providers.base import Offer
    from tests.launcher.plan.test_plan_rank import FPT, HASH, measured

    offers = [  # the provider's order: cheapest $/h first
        Offer("vastai", "1", "RTX 3060", 1, 0.05, gpu_memory_gb=12.0, host="m1"),  # cheapest, cannot hold the run
        Offer("vastai", "2", "RTX 3090", 1, 0.20, gpu_memory_gb=24.0, host="m2"),  # cheap per hour, slow: dear per run
        Offer("vastai", "3", "RTX 4090", 1, 0.40, gpu_memory_gb=24.0, host="m3"),
        Offer("vastai", "4", "RTX 4090", 1, 0.45, gpu_memory_gb=24.0, host="m4"),
        Offer("vastai", "5", "Mystery GPU", 1, 0.30, gpu_memory_gb=48.0, host="m5"),  # no speed to go on
    ]
    needs = RunNeeds(run="demo", target_tokens=2_000_000_000, tokens_done=1_000_000_000, memory_bytes=16 * 2**30, max_cost=5)
    speeds = SpeedModel([measured("NVIDIA GeForce RTX 3090", 30_000), measured("NVIDIA GeForce RTX 4090", 92_000)], FPT, HASH)
    rank = plan_ranking("vastai", needs, speeds)
    assert [o.offer_id for o in rank(offers)] == ["3", "4", "2", "5"]  # $ per run, then the unranked; the 3060 never
    assert next_offer(offers, [], rank).offer_id == "3"
    assert next_offer(offers, ["m3"], rank).offer_id == "4"             # its host failed the run: the next
    assert next_offer(offers, ["m3", "m4", "m2", "m5"], rank) is None
    assert next_offer(offers, ["m1"]).offer_id == "2"                   # without a ranking: the provider's order


def test_a_failure_seen_as_the_box_ends_is_the_box_lost_not_a_run_failure(tmp_path, monkeypatch):
    """The provider answered "running", then the box died before the SSH read: the trainer looks gone.
    Asked again, the provider says stopped, so the box is ended as lost and no failure is counted."""
    from launcher.managed.diagnosis import Diagnosis

    monkeypatch.setenv("VAST_API_KEY", API_KEY)
    with FakeVast() as fake:
        controller = _controller(tmp_path, fake)
        record = _started_box(tmp_path, controller, "eeeeee")
        fake.outbid(int(record["id"]))
        gone = Diagnosis(RUN_FAILED, "the trainer failed (process gone) during start", "start|None|")
        assert controller.act(gone, record) is None
        assert fake.alive() == [] and load_state(tmp_path)["instance"] is None  # ended through the provider
        assert controller.managed().get("failures", []) == []                   # the run's failures: none
        assert controller.ledger.read().interruptions == 1
