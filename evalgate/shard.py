"""Sharded runs: which cases a ``--evalgate-shard K/N`` run takes, and what it records.

A CI matrix splits one suite run over N jobs. Cases, not items, are split: every config
and repeat of a case runs in the same shard, so the paired comparison of two configs on
a case is made under the same load. A case's shard depends only on its suite's name and
its id (a SHA-256, not Python's salted ``hash()``), so adding or removing a case moves no
other case, and every job of the matrix computes the same split without talking to the
others. The split is even in expectation, not exactly: with few cases a shard may get
none (it then records an empty part, which the merge accepts).

Each shard's run directory holds ``shard.json`` (written atomically when the run starts
and again at its end): its K/N, and per suite the suite file, its hash and the case ids
of this shard. ``evalgate merge`` (:mod:`evalgate.merge`) reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHARD_FILE = "shard.json"
FORMAT_VERSION = 1
_SPEC = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


class ShardSpecError(ValueError):
    """A ``K/N`` that is not one (the message is the whole, one-line explanation)."""


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, suite: str, case_id: str) -> bool:
        return case_shard(suite, case_id, self.count) == self.index


def parse_shard(text: str) -> Shard:
    """``"2/3"`` -> ``Shard(2, 3)``; anything else raises :class:`ShardSpecError`."""
    match = _SPEC.fullmatch(text or "")
    if match is None:
        raise ShardSpecError(f"expected K/N (e.g. 2/3), got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1:
        raise ShardSpecError(f"N must be at least 1, got {text!r}")
    if not 1 <= index <= count:
        raise ShardSpecError(f"K must be between 1 and N, got {text!r}")
    return Shard(index, count)


def case_shard(suite: str, case_id: str, count: int) -> int:
    """The 1-based shard of a case among ``count``: stable across runs and machines."""
    digest = hashlib.sha256(f"{suite}\x00{case_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count + 1


def shard_record(shard: Shard, suites: Iterable[Any], rootpath: Path) -> dict[str, Any]:
    """What ``shard.json`` holds for ``suites`` (loaded :class:`~evalgate.suite.model.Suite`)."""
    entries: dict[str, Any] = {}
    for suite in suites:
        path = Path(suite.path)
        try:
            shown = path.resolve().relative_to(rootpath.resolve()).as_posix()
        except ValueError:
            shown = path.resolve().as_posix()
        entries[suite.name] = {
            "path": shown,
            "suite_hash": suite.suite_hash,
            "cases": [c.id for c in suite.cases if shard.holds(suite.name, c.id)],
            "total_cases": len(suite.cases),
        }
    return {"version": FORMAT_VERSION, "shard": [shard.index, shard.count], "suites": entries}


def write_shard_record(run_dir: Path, record: Mapping[str, Any]) -> None:
    """Writes ``shard.json`` atomically (a reader never sees half a file)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / SHARD_FILE
    tmp = target.with_name(f".{SHARD_FILE}.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)


def read_shard_record(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``shard.json``, or None when the run was not sharded."""
    try:
        text = (run_dir / SHARD_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return json.loads(text)


def shard_note(record: Mapping[str, Any]) -> str:
    """One line: which part of the suites this shard ran."""
    index, count = record["shard"]
    suites = record["suites"]
    ran = sum(len(s["cases"]) for s in suites.values())
    total = sum(int(s["total_cases"]) for s in suites.values())
    return (
        f"shard {index}/{count}: {ran} of {total} cases; its figures cover this part only and "
        "the gate is not applied: gate the merged shards (`evalgate merge DIR... -o reports`)"
    )
