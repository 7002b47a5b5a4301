"""ChainScratch.prepare extracts the members of a chain two at a time: the members land in
chain order, a failing member stops the others before the scratch is removed. The fetch and
extraction are stand-ins here (the real ones run in tests/integration/test_incremental_chain.py)."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sentinel_backup.errors import Interrupted, RestoreFailed, SourceError
from sentinel_backup.physical.incremental import ChainScratch


def scratch_for(tmp_path: Path, extract: Any, members: int = 3) -> ChainScratch:
    chain = []
    for n in range(members):
        manifest = SimpleNamespace(artifact=f"base_{n}.tar.zst", size_bytes=10)
        storage = SimpleNamespace(name="local", stat=lambda key: SimpleNamespace(size=10))
        chain.append((SimpleNamespace(id=f"base_{n}", manifest=manifest), storage))
    restorer = SimpleNamespace(owner=None, settings=SimpleNamespace(physical_spool_dir=tmp_path), _extract=extract)
    scratch = ChainScratch.__new__(ChainScratch)
    scratch.restorer, scratch.chain, scratch.folder, scratch.members = restorer, chain, None, []
    return scratch


def test_members_are_extracted_into_folders_in_chain_order(tmp_path: Path) -> None:
    seen: list[str] = []
    lock = threading.Lock()

    def extract(member: Any, storage: Any, extractor: Any) -> None:
        (extractor.root / "PG_VERSION").write_text(member.id)
        with lock:
            seen.append(member.id)

    scratch = scratch_for(tmp_path, extract)
    scratch.prepare()
    assert sorted(seen) == ["base_0", "base_1", "base_2"]
    assert [(p.name, (p / "PG_VERSION").read_text()) for p in scratch.members] == [
        ("000-base_0", "base_0"), ("001-base_1", "base_1"), ("002-base_2", "base_2")]
    scratch.cleanup()
    assert not any(tmp_path.iterdir())


def test_a_failing_member_stops_the_other_and_removes_the_scratch(tmp_path: Path) -> None:
    stopped: list[str] = []

    def extract(member: Any, storage: Any, extractor: Any) -> None:
        if member.id == "base_1":
            raise SourceError("bad zstd frame", "take another backup")
        try:
            while True:  # the root: a long extraction, chunk after chunk, until it is told to stop
                extractor.write(b"")
                threading.Event().wait(0.01)
        except Interrupted:
            stopped.append(member.id)
            raise

    scratch = scratch_for(tmp_path, extract)
    with pytest.raises(RestoreFailed) as failed:
        scratch.prepare()
    assert "chain member base_1: bad zstd frame; nothing was written" in failed.value.message
    assert failed.value.hint == "take another backup"
    assert "base_0" in stopped  # the root stopped at its next chunk (base_2 too, if it had started)
    assert not any(tmp_path.iterdir())  # scratch removed
