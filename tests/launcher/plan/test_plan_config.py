"""box.kind plan: candidates validated with clear messages; the config resolved to the recorded box."""
from __future__ import annotations

import pytest

from launcher.config import LauncherConfig
from launcher.plan.candidates import resolve_for_record
from launcher.providers import record_mismatch
from runcontract.configlib import validate
from runcontract.errors import ConfigError

CANDIDATES = [{"kind": "vastai", "gpu_name": "RTX 4090", "gpu_count": [1, 2]},
              {"kind": "runpod", "gpu_name": "NVIDIA GeForce RTX 4090", "gpu_count": 2},
              {"kind": "ssh", "host": "gpu.example", "user": "me", "hourly_rate": 0.2, "gpu_name": "RTX 3090"}]


def plan_config(**box) -> LauncherConfig:
    return validate(LauncherConfig, {"box": {"kind": "plan", "candidates": CANDIDATES, **box},
                                     "budget": {"hourly_rate": 0.45, "max_cost": 15}}, "test.yaml")


@pytest.mark.parametrize("box, message", [
    ({"kind": "plan"}, "kind plan needs candidates"),
    ({"kind": "vastai", "candidates": CANDIDATES[:1]}, "candidates are chosen among by kind plan"),
    ({"kind": "plan", "candidates": [{"kind": "ssh", "host": "h", "user": "u", "gpu_name": "RTX 3090"}]}, "needs hourly_rate"),
    ({"kind": "plan", "candidates": [{"kind": "vastai", "hourly_rate": 1.0}]}, "are for ssh candidates"),
    ({"kind": "plan", "candidates": [{"kind": "vastai", "gpu_count": []}]}, "gpu_count must be"),
    ({"kind": "plan", "candidates": [{"kind": "lambda"}]}, "kind"),
])
def test_bad_candidates_are_one_clear_error(box, message):
    with pytest.raises(ConfigError) as caught:
        validate(LauncherConfig, {"box": box}, "test.yaml")
    assert message in str(caught.value) and "test.yaml" in str(caught.value)


def test_a_single_count_is_a_list_of_one():
    assert plan_config().box.candidates[1].gpu_count == [2]


def test_the_config_resolves_to_the_rented_candidate():
    config = plan_config()
    vast = resolve_for_record(config, {"provider": "vastai", "id": "7", "gpu_name": "RTX 4090", "gpu_count": 2})
    assert vast.box.kind == "vastai" and vast.box.vastai.gpu_count == 2 and vast.run.gpu_count == 2
    assert vast.box.candidates == [] and vast.budget.hourly_rate == 0.45
    ssh = resolve_for_record(config, {"provider": "static", "id": "me@gpu.example:22", "ssh_host": "gpu.example",
                                      "ssh_port": 22, "ssh_user": "me", "gpu_count": 1, "hourly_price": 0.2})
    assert (ssh.box.kind, ssh.box.host, ssh.box.user, ssh.budget.hourly_rate) == ("ssh", "gpu.example", "me", 0.2)
    assert resolve_for_record(config, None) is config


def test_a_candidates_config_is_not_refused_for_the_recorded_kind_but_a_wrong_api_is():
    config = plan_config()
    record = {"provider": "runpod", "id": "pod1", "api_base": config.box.runpod.api_base, "gpu_count": 2}
    assert record_mismatch(config, record, teardown=True) is None
    elsewhere = {**record, "api_base": "http://127.0.0.1:9/v2"}
    assert "was rented through http://127.0.0.1:9/v2" in record_mismatch(config, elsewhere, teardown=True)


def test_plan_of_a_config_without_candidates_says_how_to_write_them(tmp_path):
    from pathlib import Path

    from launcher.plan.make import make_plan
    from runcontract.errors import UserError

    with pytest.raises(UserError) as caught:
        make_plan(LauncherConfig(), Path(tmp_path), lambda kind, cfg: None)
    assert "box.kind: plan with candidates" in str(caught.value) and "kind local" in str(caught.value)
