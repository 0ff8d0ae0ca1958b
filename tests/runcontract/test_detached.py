"""One rule for a run detached from its terminal (runcontract/detached.py): `launcher run` and the
trainer's --launch_screen pick the same multiplexer and name the session after the run alike."""
from __future__ import annotations

import shutil

import pytest

from launcher.box.base import BoxError
from launcher.box.local import LocalBox
from launcher.box.detached_session import detect_multiplexer
from runcontract.detached import session_name
from runcontract.errors import UserError
from trainer.training.detach import pick_multiplexer


def only_these_on_path(tmp_path, monkeypatch, tools) -> None:
    """PATH holds bash and stand-ins for ``tools`` only."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bash").symlink_to(shutil.which("bash"))
    for tool in tools:
        (bin_dir / tool).write_text("#!/bin/sh\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


@pytest.mark.parametrize("installed, expected", [(("tmux", "screen"), "tmux"), (("screen",), "screen"), (("tmux",), "tmux")])
def test_launcher_and_trainer_pick_the_same_multiplexer(tmp_path, monkeypatch, installed, expected):
    only_these_on_path(tmp_path, monkeypatch, installed)
    assert detect_multiplexer(LocalBox(tmp_path)) == expected
    assert pick_multiplexer() == expected


def test_neither_multiplexer_is_a_clear_error_on_both_sides(tmp_path, monkeypatch):
    only_these_on_path(tmp_path, monkeypatch, ())
    with pytest.raises(BoxError, match="neither tmux nor screen"):
        detect_multiplexer(LocalBox(tmp_path))
    with pytest.raises(UserError, match="needs tmux or screen"):
        pick_multiplexer()


def test_the_session_is_named_after_the_run():
    assert session_name("quickstart") == "llmbox-quickstart"  # .launcher/state.json records this name
