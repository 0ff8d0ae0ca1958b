"""The run-folder contract (runcontract/run_folder.py): one step-folder pattern, one order of
checkpoints, and each file name written once in the code of both halves."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from runcontract import run_folder
from runcontract.errors import UserError
from runcontract.run_folder import FINAL_DIR, checkpoint_rel, recency, step_dir_name, step_of_dir
from tests.harness.paths import REPO as ROOT

FILE_NAMES = {value for name, value in vars(run_folder).items()
              if name.endswith(("_FILE", "_LOG")) and isinstance(value, str)}


def test_step_folder_names_round_trip_and_nothing_else_matches():
    for step in (0, 7, 500, 123456, 10_000_000):
        assert step_of_dir(step_dir_name(step)) == step
    assert step_dir_name(500) == "step_000500"
    for not_a_step in ("step_5", "step_00050", "step_000500.tmp", ".step_000500.tmp", "final", "step_-00001", "step_"):
        assert step_of_dir(not_a_step) is None, not_a_step


def test_checkpoint_rel_names_the_two_kinds_and_refuses_the_rest():
    assert checkpoint_rel("final") == "final"
    assert checkpoint_rel("step_000500") == "checkpoints/step_000500"
    for bad in ("step_5", "../final", "checkpoints/step_000500", ""):
        with pytest.raises(UserError, match="not a checkpoint name"):
            checkpoint_rel(bad)


def test_newest_is_the_highest_step_and_final_wins_a_tie():
    found = [(300, "step_000300"), (300, FINAL_DIR), (200, FINAL_DIR), (100, "step_000100")]
    assert max(found, key=lambda c: recency(*c)) == (300, FINAL_DIR)
    assert max(found[2:], key=lambda c: recency(*c)) == (200, FINAL_DIR)
    assert max([(400, "step_000400"), (300, FINAL_DIR)], key=lambda c: recency(*c)) == (400, "step_000400")


def _code_strings(path: Path):
    """(line, text) of the string constants of ``path`` that are code, not docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_each_run_file_name_is_written_once_in_launcher_and_trainer():
    """A path built from a literal (``run_dir / "status.json"``, ``f"{run}/cost.json"``) instead
    of the contract's name; messages to the user may still mention the files."""
    assert {"status.json", "cost.json", "throughput.json", "metrics.jsonl", "train.log", "store.json"} <= FILE_NAMES
    found = []
    for half in ("launcher", "trainer"):
        for path in sorted((ROOT / half).rglob("*.py")):
            for line, text in _code_strings(path):
                if text in FILE_NAMES or any(text.startswith(f"/{name}") for name in FILE_NAMES) or text in ("runs", "runs/"):
                    found.append(f"{path.relative_to(ROOT)}:{line}: {text!r}")
    assert found == [], "use the names in runcontract/run_folder.py:\n" + "\n".join(found)


def test_exit_codes_are_named_once_in_runcontract_errors():
    """``exit_code = 3`` or ``sys.exit(1)`` outside runcontract/errors.py would be a second owner."""
    found = []
    for half in ("launcher", "trainer"):
        for path in sorted((ROOT / half).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "exit_code" for t in node.targets) \
                        and isinstance(node.value, ast.Constant):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: exit_code = {node.value.value!r}")
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "exit" \
                        and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value not in (0, None):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: exit({node.args[0].value!r})")
    assert found == [], "use the EXIT_* names in runcontract/errors.py:\n" + "\n".join(found)
