"""Append-only ledgers in the store: concurrent writers lose nothing; broken records are skipped."""
from __future__ import annotations

import subprocess
import sys
import threading
from datetime import datetime, timezone

import pytest

from launcher.store.file import FileStore
from launcher.store.ledger import Ledger
from tests.harness.paths import REPO
from tests.harness.stores import s3_kind_store


@pytest.fixture(params=["file", "rclone", "moto"])
def store(request, tmp_path):
    if request.param == "file":
        return FileStore(tmp_path / "store")
    return s3_kind_store(request, request.param)[0]


def test_records_come_back_in_append_order(store):
    ledger = Ledger(store, "throughput")
    assert ledger.read().items == []
    early = datetime(2026, 1, 1, tzinfo=timezone.utc)
    late = datetime(2026, 6, 1, tzinfo=timezone.utc)
    ledger.append({"n": 2}, now=late)
    ledger.append({"n": 1}, now=early)
    assert [r["n"] for r in ledger.read().items] == [1, 2]
    assert Ledger(store, "spend").read().items == []  # ledgers are apart


def test_two_concurrent_writers_keep_every_record(store):
    ledger = Ledger(store, "spend")
    errors = []

    def writer(who: str) -> None:
        try:
            for i in range(25):
                Ledger(store, "spend").append({"who": who, "i": i})
        except Exception as exc:  # surfaced below: a lost append is a failure
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    got = ledger.read()
    assert sorted((r["who"], r["i"]) for r in got.items) == sorted((w, i) for w in "ab" for i in range(25))
    assert got.unreadable == []


def test_two_processes_append_to_one_file_store(tmp_path):
    code = ("import sys; from pathlib import Path; from launcher.store.file import FileStore; "
            "from launcher.store.ledger import Ledger; l = Ledger(FileStore(Path(sys.argv[1])), 'throughput')\n"
            "for i in range(40): l.append({'who': sys.argv[2], 'i': i})")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "store"), who], cwd=REPO) for who in "xy"]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    items = Ledger(FileStore(tmp_path / "store"), "throughput").read().items
    assert len(items) == 80 and {(r["who"], r["i"]) for r in items} == {(w, i) for w in "xy" for i in range(40)}


def test_a_broken_record_is_skipped_and_counted(store):
    ledger = Ledger(store, "throughput")
    ledger.append({"ok": True})
    store.write_bytes("_ledgers/throughput/20260101T000000.000000Z-bad.json", b"{not json")
    got = ledger.read()
    assert got.items == [{"ok": True}]
    assert got.unreadable == ["_ledgers/throughput/20260101T000000.000000Z-bad.json"]


def test_ledger_names_are_one_segment(store):
    with pytest.raises(ValueError):
        Ledger(store, "a/b")
