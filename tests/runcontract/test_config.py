"""Bad configs give one clear error naming the file, the key, the value and what is allowed;
exit code 2; no traceback. Overrides work on single keys."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from launcher.config import LauncherConfig, load_launcher_config
from runcontract.config import DataMixConfig, ModelConfig, TrainConfig
from runcontract.configlib import load_config
from runcontract.errors import ConfigError

GOOD = {"model": "configs/model_smoke.yaml", "train": "configs/train_smoke.yaml", "data": "configs/data_offline.yaml"}


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def show_config(run_python, model=GOOD["model"], train=GOOD["train"], data=GOOD["data"], sets=()):
    args = ["-m", "trainer.show_config", "--model_config", str(model), "--train_config", str(train), "--data_config", str(data)]
    for item in sets:
        args += ["--set", item]
    return run_python(*args)


def assert_config_error(result, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in:\n{result.stderr}"


@pytest.mark.parametrize(
    ("section", "content", "needles"),
    [
        ("train", {"lr": 1e-3, "learning_rate": 3}, ["unknown key 'learning_rate'", "allowed keys here:", "lr,"]),
        ("train", {"seq_len": "long"}, ["key 'seq_len' = 'long'", "valid integer"]),
        ("train", {"budget": {"hourly_rate": -0.5}}, ["key 'budget.hourly_rate' = -0.5", "greater than or equal to 0"]),
        ("train", {"budget": {"max_cost": 0}}, ["key 'budget.max_cost' = 0", "greater than 0"]),
        ("train", {"precision": "fp8"}, ["key 'precision' = 'fp8'", "'auto', 'bf16' or 'fp32'"]),
        ("model", {"vocab_size": 70000}, ["key 'vocab_size' = 70000", "less than or equal to 65535"]),
        ("model", {"d_model": 100, "n_heads": 3}, ["d_model (100) must be divisible by n_heads (3)"]),
        ("data", {"sources": [{"name": "c4", "type": "ftp", "path": "x"}]}, ["key 'sources.0.type' = 'ftp'", "'hub'"]),
    ],
)
def test_bad_config_file_is_one_clear_error(run_python, tmp_path, section, content, needles):
    bad = write_yaml(tmp_path / f"bad_{section}.yaml", content)
    result = show_config(run_python, **{section: bad})
    assert_config_error(result, str(bad), *needles)


def test_every_wrong_field_is_listed_once(run_python, tmp_path):
    bad = write_yaml(tmp_path / "train.yaml", {"lr": -1, "warmup_steps": -3, "bogus": 1})
    result = show_config(run_python, train=bad)
    assert_config_error(result, "3 problems", "key 'lr' = -1", "key 'warmup_steps' = -3", "unknown key 'bogus'")
    assert result.stderr.count("  - ") == 3


def test_override_sets_a_single_key(run_python):
    result = show_config(run_python, sets=["train.lr=3e-4", "model.n_layers=2", "data.seed=7"])
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["train"]["lr"] == pytest.approx(3e-4)
    assert resolved["model"]["n_layers"] == 2
    assert resolved["data"]["seed"] == 7
    assert resolved["train"]["seq_len"] == 128  # the rest of the file is kept


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("train.lr", ["'train.lr' is not of the form section.key=value"]),
        ("optim.lr=1", ["names section 'optim'", "allowed sections: data, model, train"]),
        ("train.budget.max_cost=-2", ["key 'budget.max_cost' = -2", "greater than 0"]),
        ("train.nonsense=1", ["unknown key 'nonsense'"]),
    ],
)
def test_bad_override_is_one_clear_error(run_python, override, needles):
    assert_config_error(show_config(run_python, sets=[override]), *needles)


def test_missing_and_malformed_files(run_python, tmp_path):
    assert_config_error(show_config(run_python, model=tmp_path / "nope.yaml"), "nope.yaml does not exist")
    broken = tmp_path / "broken.yaml"
    broken.write_text("lr: [1, 2\n")
    assert_config_error(show_config(run_python, train=broken), "broken.yaml is not valid YAML")
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    assert_config_error(show_config(run_python, train=listy), "must hold a mapping")


def test_shipped_configs_are_valid_and_100m_is_about_100m_shaped():
    model = load_config(ModelConfig, "configs/model_100m.yaml")
    assert (model.d_model, model.n_layers, model.n_heads, model.kv_heads, model.vocab_size) == (768, 12, 12, 4, 32000)
    load_config(TrainConfig, "configs/train_100m.yaml")
    load_config(TrainConfig, "configs/train_smoke.yaml")
    load_config(DataMixConfig, "configs/data_c4_wiki.yaml")
    load_config(DataMixConfig, "configs/data_offline.yaml")


@pytest.mark.parametrize("name", ["quickstart", "run_ssh", "run_runpod", "run_vastai"])
def test_shipped_launcher_configs_are_valid(name):
    config = load_launcher_config(f"configs/{name}.yaml")
    model = load_config(ModelConfig, config.run.model_config_path)
    assert config.run.tokenizer.vocab_size == model.vocab_size  # the run stage refuses a mismatch
    load_config(TrainConfig, config.run.train_config_path)
    load_config(DataMixConfig, config.run.data_config_path)


def test_launcher_config_default_and_errors(tmp_path):
    default = load_launcher_config(None)
    assert default.box.kind == "local"
    assert default.storage.url.startswith("file://")
    assert default.run.name == "quickstart"
    assert LauncherConfig().box.kind == "local"  # with no file at all, too

    overridden = load_launcher_config(None, ["budget.max_cost=3.5", "run.name=other"])
    assert overridden.budget.max_cost == 3.5 and overridden.run.name == "other"

    bad = write_yaml(tmp_path / "run.yaml", {"box": {"kind": "ssh", "host": "1.2.3.4"}, "storage": {"url": "ftp://x"}, "budget": {"hourly_rate": -1}})
    with pytest.raises(ConfigError) as err:
        load_launcher_config(bad)
    message = str(err.value)
    assert str(bad) in message
    assert "an ssh box needs host and user" in message
    assert "storage url must start with file:// or s3://" in message
    assert "key 'budget.hourly_rate' = -1" in message


@pytest.mark.parametrize("section, old, new, value", [("run", "gpus", "gpu_count", 2),
                                                      ("box.runpod", "gpu_type", "gpu_name", "NVIDIA H100 80GB HBM3"),
                                                      ("box.vastai", "num_gpus", "gpu_count", 2)])
def test_renamed_launcher_keys_work_for_one_release_with_a_warning(tmp_path, capsys, section, old, new, value):
    """One name per concept (gpu_count, gpu_name); a config or a script written with the old name still runs."""
    def value_of(config):
        for part in section.split("."):
            config = getattr(config, part)
        return getattr(config, new)

    def config_file(name: str, keys: dict) -> Path:
        data: dict = {}
        node = data
        for part in section.split("."):
            node = node.setdefault(part, {})
        node.update(keys)
        return write_yaml(tmp_path / name, data)

    assert value_of(load_launcher_config(config_file("old.yaml", {old: value}))) == value
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and f"{section}.{old} is deprecated" in warning and f"call it {section}.{new}" in warning
    # an old-name --set override wins over the new name in the file, as any override does
    overridden = load_launcher_config(config_file("new.yaml", {new: value_of(LauncherConfig())}), [f"{section}.{old}={value}"])
    assert value_of(overridden) == value and f"{section}.{old} is deprecated" in capsys.readouterr().err
    assert value_of(load_launcher_config(config_file("plain.yaml", {new: value}))) == value
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("name", ["quickstart", "run_ssh", "run_runpod", "run_vastai"])
def test_shipped_launcher_configs_use_no_deprecated_key(name, capsys):
    load_launcher_config(f"configs/{name}.yaml")
    assert capsys.readouterr().err == ""
