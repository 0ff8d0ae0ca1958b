"""The managed-run controller: keep the run going to its target across boxes, within one budget.

    launcher run --config C --managed

Each turn of the loop re-reads what it acts on, from the local state file
(``.launcher/state.json``: the recorded instance, and ``managed``: the box the run was started
on, the hosts that failed, the failures seen, since when SSH is down) and from the store (the
spend ledger, the fencing generation, the newest verified checkpoint), so the controller can
be killed at any moment (Ctrl-C, a laptop asleep) and the same command picks up where it was:

    no box recorded        -> the run finished in the store? done. Else check the budget and
                              rent the next box (launcher up's path; recorded at once)
    box not started on     -> wait for it, bootstrap it, raise the fence, run --resume from the
                              store's newest verified checkpoint (launcher run's path)
    box started on         -> look (provider, SSH, status.json), diagnose (diagnosis.py), act:
                              healthy: wait; finished: wait for the store, end the box, done;
                              lost or hung: end it through its provider, rent the next;
                              failed: retry once on the same box, the same failure twice stops

A box is rented only when no instance is recorded, and an instance is dropped from the state
only once its provider confirmed it gone: a controller killed right before or right after it
recorded a rental never rents a second box for it.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

from rich.console import Console

from launcher.box.base import BoxError
from launcher.box.factory import box_spec, open_box
from launcher.config import RENTED_KINDS, LauncherConfig
from launcher.managed import fence
from launcher.managed.choice import next_offer
from launcher.managed.diagnosis import BOX_LOST, FINISHED, HEALTHY, RUN_FAILED, TRAINER_HUNG, Diagnosis, Observation, diagnose
from launcher.managed.recovery import adopt_pending, end_box, rent_next
from launcher.managed.spend import SpendLedger
from launcher.providers.base import STOPPED, TERMINATED
from launcher.state import load_state, update_state
from runcontract.errors import UserError
from runcontract.run_files import StatusFile
from runcontract.run_folder import FINAL_DIR, FINISHED as FINISHED_STATE, STATUS_FILE


class BudgetExhausted(UserError):
    """The budget left cannot pay for a new box to reach the next checkpoint."""


class Controller:
    def __init__(self, config: LauncherConfig, config_path: Optional[str], root: Path, console: Console,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time):
        from launcher.store.factory import open_store

        if config.box.kind not in RENTED_KINDS:
            raise UserError(f"--managed rents and replaces boxes: box.kind must be runpod or vastai, not {config.box.kind}. "
                            "For a box you own, use `launcher run` (and `launcher run --resume` after a failure).")
        self.config, self.config_path, self.root, self.console = config, config_path, root, console
        self.sleep, self.clock = sleep, clock
        self.run = config.run.name
        self.store = open_store(config.storage, root)
        self.ledger = SpendLedger(self.store, self.run)
        self.settings = config.managed
        self.ledgered: Optional[str] = None  # the instance this process has made sure the spend ledger records

    # -- the state it lives in ------------------------------------------------------------------
    def managed(self) -> dict:
        return dict(load_state(self.root).get("managed") or {})

    def remember(self, **changes) -> None:
        managed = self.managed()
        managed.update(changes)
        update_state(self.root, managed=managed)

    @property
    def limit(self) -> float:
        budget = self.config.budget
        return float(budget.max_total_cost if budget.max_total_cost is not None else budget.max_cost)

    # -- the loop -----------------------------------------------------------------------------
    def loop(self) -> int:
        recorded_run = self.managed().get("run")
        if recorded_run and recorded_run != self.run:
            raise UserError(f"this project's managed state is for run {recorded_run!r}, not {self.run!r}: finish it, or "
                            "`launcher down` and start the new run")
        self.remember(run=self.run)
        while True:
            instance = adopt_pending(self.config, self.root, self.console) or load_state(self.root).get("instance")
            if instance is None:
                if self.finished_in_store():
                    return self.report("the run finished")
                instance = self.rent()
            if self.ledgered != instance["id"]:  # once per box and controller process: the append reads the whole ledger
                self.ledger.rented(instance["provider"], instance["id"], float(instance.get("hourly_price") or 0.0),
                                   float(instance.get("rented_at") or self.clock()))
                self.ledgered = instance["id"]
            if self.managed().get("pending_name"):  # the create it names is recorded now
                self.remember(pending_name=None, pending_since=None)
            if self.managed().get("started_on") != instance["id"]:
                try:
                    self.start_on(instance)
                    continue
                except BoxError as exc:  # the box went away while starting: the next look diagnoses it
                    self.console.print(f"managed: starting on the box failed: {exc}", highlight=False)
                    self.remember(started_on=instance["id"])
                except UserError as exc:
                    if not self.box_answers(instance):  # the box is the problem, not the run: diagnose it (grace, then lost)
                        self.console.print(f"managed: starting on the box failed and the box does not answer: {exc}", highlight=False)
                        self.remember(started_on=instance["id"])
                        continue
                    # a stage failed on a box that answers: a failure of the run, retried once
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    done = self.act(Diagnosis(RUN_FAILED, f"starting the run failed: {first}", f"start|{first}"), instance)
                    if done is not None:
                        return done
                    continue
            diagnosis = self.look(instance)
            done = self.act(diagnosis, instance)
            if done is not None:
                return done

    def rent(self) -> dict:
        spend = self.ledger.read()
        if len(spend.boxes) >= self.settings.max_boxes:
            raise UserError(f"run {self.run} has used {len(spend.boxes)} boxes (managed.max_boxes): not renting another. "
                            "Look at the interruptions with `launcher status`, then raise managed.max_boxes to go on")
        left = self.limit - spend.total(self.clock())
        hours = self.hours_to_next_checkpoint()
        avoid = self.managed().get("avoid_hosts", [])
        rank = self.ranking()
        picked: list = []

        def pick(offers):
            offer = next_offer(offers, avoid, rank)
            picked[:] = [offer]
            if offer is not None and offer.hourly_price is not None and offer.hourly_price * hours > left:
                raise BudgetExhausted(
                    f"not renting another box: ${left:.4f} of the run's ${self.limit:.2f} budget is left, and the next box "
                    f"({offer.hourly_price:.3f} $/h) needs ${offer.hourly_price * hours:.4f} to reach the next checkpoint "
                    f"({hours * 3600:.0f} s with startup). The run stays in the store at its newest checkpoint; raise "
                    "budget.max_total_cost and run the same command to go on")
            return offer

        self.console.print(f"managed: renting a box for run {self.run} (${left:.4f} of ${self.limit:.2f} left"
                           + (f"; avoiding {', '.join(avoid)}" if avoid else "") + ")", highlight=False)
        instance = rent_next(self.config, self.config_path, self.root, self.console, pick)
        if picked and picked[0] is not None and picked[0].host and not instance.get("host"):
            instance = {**instance, "host": picked[0].host}  # the machine it runs on, to avoid if it fails
            update_state(self.root, instance=instance)
        return instance

    def ranking(self):
        """The plan's order for the next box (dollars for the remaining tokens); None when its inputs
        cannot be read (then the provider's order, cheapest $/h first)."""
        from launcher.managed.choice import plan_ranking
        from launcher.plan.make import plan_inputs

        try:
            needs, speeds, notes = plan_inputs(self.config, self.root, store=self.store)
        except UserError as err:
            self.console.print(f"managed: the plan's ranking is not available ({err}); taking the cheapest $/h", highlight=False)
            return None
        needs = replace(needs, max_cost=self.limit)
        for note in notes:
            self.console.print(f"managed: {note}", highlight=False)
        return plan_ranking(self.config.box.kind, needs, speeds)

    def progress(self) -> tuple[Optional[float], int]:
        """(the run's measured seconds per step from its stored status.json, None until measured;
        train.checkpoint_interval). Raises UserError or OSError when either cannot be read."""
        from runcontract.config import SECTIONS, TrainConfig
        from runcontract.configlib import load_config

        status = StatusFile.parse(self.store.read_text(f"{self.run}/{STATUS_FILE}") or "", STATUS_FILE)
        run = self.config.run
        train = load_config(TrainConfig, self.root / run.train_config_path, run.overrides, "train", SECTIONS)
        step_s = status.elapsed_s / status.step if status.step and status.elapsed_s else None
        return step_s, train.checkpoint_interval

    def hours_to_next_checkpoint(self) -> float:
        """Startup plus one checkpoint interval at the run's measured seconds per step (startup only when unmeasured)."""
        seconds = float(self.settings.startup_s)
        try:
            step_s, interval = self.progress()
            if step_s:
                seconds += interval * step_s
        except (UserError, OSError):
            pass
        return seconds / 3600.0

    def start_on(self, instance: dict) -> None:
        """Bootstrap the recorded box, raise the fence, and start the run there from the store's newest checkpoint."""
        import launcher.providers as providers
        from launcher.providers.provisioning import wait_until_ready
        from launcher.providers.registry import provider_config
        from launcher.run.start import start_training, validate_run
        from launcher.commands.up import bring_up
        from launcher.run.context import RunContext
        from launcher.console import make_console

        pcfg = provider_config(self.config)
        try:  # a box recorded by a controller killed while it was starting: wait for it as `up` would
            wait_until_ready(providers.make_provider(self.config), instance["id"], pcfg.ready_timeout_s, pcfg.poll_interval_s)
        except providers.ProviderError as exc:
            end_box(self.root, self.config, instance, self.ledger, "lost", self.console, avoid_host=True)
            self.console.print(f"managed: the box did not come up ({exc}); renting another", highlight=False)
            return
        validate_run(self.config, self.config_path, self.root)
        box = bring_up(self.config, self.config_path, self.root, self.console, assume_yes=True)
        instance = load_state(self.root)["instance"]
        spec = load_state(self.root)["box"] or box_spec(self.config, self.root, instance)
        generation = fence.advance(self.store, self.run, f"{instance['provider']} {instance['id']}")
        resume = self.store.latest_checkpoint(self.run) is not None
        self.console.print(f"managed: starting run {self.run} on {instance['provider']} instance {instance['id']} "
                           f"(fencing generation {generation}; " + ("resuming from the store's newest verified checkpoint)" if resume else "from the start)"),
                           highlight=False)
        hourly = float(instance["hourly_price"]) if instance.get("hourly_price") is not None else None
        ctx = RunContext(config=self.config, project_root=self.root, box=box, console=make_console(), config_path=self.config_path,
                         resume=resume, hourly_rate=hourly, instance_id=instance["id"], fence_generation=generation)
        self.suggest_interval()
        start_training(ctx, spec, instance, self.config_path)
        self.remember(started_on=instance["id"], generation=generation, ssh_down_since=None)

    def suggest_interval(self) -> None:
        """Young's checkpoint interval from the measured checkpoint time and the interruption rate, when both are known."""
        from launcher.managed.interval import suggestion
        from runcontract.run_folder import TRAIN_LOG

        try:
            step_s, interval = self.progress()
            spend = self.ledger.read()
            rate = self.settings.interruptions_per_hour
            hours = sum(b.hours(self.clock()) for b in spend.boxes)
            if rate is None and spend.interruptions and hours > 0:
                rate = spend.interruptions / hours
            line = suggestion(self.store.read_text(f"{self.run}/{TRAIN_LOG}") or "", step_s, rate, interval)
        except (UserError, OSError):
            return
        if line:
            self.console.print(f"managed: {line}", highlight=False)

    def box_answers(self, instance: dict) -> bool:
        """Whether the provider says the box runs and a command runs on it over SSH."""
        import launcher.providers as providers

        try:
            live = providers.describe(self.config, instance["id"])
        except providers.ProviderError:
            live = None
        if live is None or not live.ssh_ready:
            return False
        box = open_box(load_state(self.root).get("box") or box_spec(self.config, self.root, instance), self.root)
        try:
            return box.run("true", check=False, timeout=60, cwd=False).ok
        except BoxError:
            return False
        finally:
            box.close()

    def look(self, instance: dict) -> Diagnosis:
        import launcher.providers as providers
        from launcher.commands.status import read_run

        self.sleep(self.settings.poll_s)
        obs = Observation(instance=None)
        try:
            obs.instance = providers.describe(self.config, instance["id"])
        except providers.ProviderError as exc:
            obs.provider_error = str(exc)
        gone = obs.provider_error is None and (obs.instance is None or not obs.instance.ssh_ready)
        if not gone:
            state = load_state(self.root)
            box = open_box(state.get("box") or box_spec(self.config, self.root, instance), self.root)
            try:
                data = read_run(box, self.run, (state.get("run") or {}).get("multiplexer") or "tmux")
                obs.status, obs.session_alive = data["status"], data["session_alive"]
                obs.exit_code, obs.stderr_tail = data["exit_code"], data["stderr_tail"] or ""
                obs.trainer_traces = data["trainer_traces"]
                if obs.status is not None and obs.status.updated:
                    obs.status_age_s = self.clock() - obs.status.updated
                if self.managed().get("ssh_down_since") is not None:
                    self.remember(ssh_down_since=None)
            except BoxError as exc:
                since = self.managed().get("ssh_down_since") or self.clock()
                self.remember(ssh_down_since=since)
                obs.ssh_ok, obs.ssh_down_for_s = False, self.clock() - since
                self.console.print(f"managed: {exc}", highlight=False)
            finally:
                box.close()
        self.last_observation = obs
        return diagnose(obs, self.settings.ssh_grace_s, self.settings.hang_s)

    def act(self, diagnosis: Diagnosis, instance: dict) -> Optional[int]:
        if diagnosis.kind == HEALTHY:
            return None
        if diagnosis.kind == FINISHED:
            self.wait_for_store()
            end_box(self.root, self.config, instance, self.ledger, "finished", self.console, avoid_host=False)
            return self.report("the run finished")
        if diagnosis.kind == RUN_FAILED and self.provider_says_ended(instance):
            diagnosis = Diagnosis(BOX_LOST, f"the provider says the box ended ({diagnosis.reason} as it went)")
        if diagnosis.kind == RUN_FAILED:
            seen = self.managed().get("failures", [])
            if diagnosis.signature in seen:
                end_box(self.root, self.config, instance, self.ledger, "failed", self.console, avoid_host=False)
                raise UserError(f"run {self.run} failed twice the same way, so the managed run stops: {diagnosis.reason}. "
                                "The box is ended; the run stays in the store at its newest checkpoint. Fix the cause "
                                "(see `launcher logs`), then run the same command again")
            self.console.print(f"managed: {diagnosis.reason}; retrying once on the same box from the newest checkpoint", highlight=False)
            self.remember(failures=[*seen, diagnosis.signature], started_on=None)
            return None
        if diagnosis.kind == BOX_LOST and self.raise_bid(instance):
            return None
        if diagnosis.kind in (BOX_LOST, TRAINER_HUNG):
            self.console.print(f"[yellow]managed: interruption: {diagnosis.reason}[/yellow]", highlight=False)
            end_box(self.root, self.config, instance, self.ledger, "lost" if diagnosis.kind == BOX_LOST else "hung",
                    self.console, avoid_host=True)
            return None
        raise AssertionError(diagnosis.kind)

    def provider_says_ended(self, instance: dict) -> bool:
        """Asked again before a failure counts against the run: a box that ends between the provider's
        answer and the SSH read looks like a trainer gone, and is the box's loss, not the run's failure."""
        import launcher.providers as providers

        try:
            live = providers.describe(self.config, instance["id"])
        except providers.ProviderError:
            return False  # no verdict: the failure stands
        if live is not None and live.state not in (STOPPED, TERMINATED):
            return False
        self.last_observation = Observation(instance=live)
        return True

    def raise_bid(self, instance: dict) -> bool:
        """An outbid Vast interruptible instance, once: raise the bid to box.vastai.max_bid and run on it again.
        True when the bid was raised (the box is kept); False: recover as for any lost box."""
        import launcher.providers as providers

        cfg = self.config.box.vastai
        live = getattr(self, "last_observation", None)
        live = live.instance if live is not None else None
        raised = self.managed().get("bid_raised", [])
        if (instance.get("provider") != "vastai" or not cfg.interruptible or cfg.max_bid is None or live is None
                or live.state != "stopped" or instance["id"] in raised):
            return False
        try:
            providers.make_provider(self.config).raise_bid(instance["id"], cfg.max_bid)
        except providers.ProviderError as exc:
            self.console.print(f"managed: could not raise the bid of instance {instance['id']}: {exc}", highlight=False)
            return False
        self.console.print(f"[yellow]managed: interruption: instance {instance['id']} was outbid; bid raised to "
                           f"${cfg.max_bid}/h (box.vastai.max_bid), resuming on it[/yellow]", highlight=False)
        self.remember(bid_raised=[*raised, instance["id"]], started_on=None)
        return True

    # -- the end ------------------------------------------------------------------------------
    def finished_in_store(self) -> bool:
        try:
            status = StatusFile.parse(self.store.read_text(f"{self.run}/{STATUS_FILE}") or "", STATUS_FILE)
        except UserError:
            return False
        newest = self.store.latest_checkpoint(self.run)
        return status.state == FINISHED_STATE and newest is not None and newest.name == FINAL_DIR

    def wait_for_store(self) -> None:
        """The agent's final flush: final/ stored and verified, status.json finished, before the box goes."""
        deadline = self.clock() + self.settings.hang_s
        while not self.finished_in_store():
            if self.clock() >= deadline:
                self.console.print(f"[yellow]managed: the store still has no finished copy of run {self.run} after "
                                   f"{self.settings.hang_s:.0f} s; ending the box anyway (`launcher fetch-checkpoint` "
                                   "shows what is stored)[/yellow]", highlight=False)
                return
            self.sleep(min(self.settings.poll_s, 5.0))

    def report(self, why: str) -> int:
        spend = self.ledger.read()
        self.console.print(f"managed: {why}: {len(spend.boxes)} box(es), {spend.interruptions} interruption(s), "
                           f"${spend.total(self.clock()):.4f} spent of ${self.limit:.2f}", highlight=False)
        return 0


def run_managed(config: LauncherConfig, config_path: Optional[str], root: Path, console: Console) -> int:
    try:
        return Controller(config, config_path, root, console).loop()
    except KeyboardInterrupt:
        console.print("managed: the controller stopped; any recorded box keeps running (and billing). Run the same command "
                      "to pick up where it was, or `launcher down` to end the box", highlight=False)
        raise
