"""``evalgate merge``: combine the shards of a CI matrix into one run, report and gate.

Each input is a shard's reports directory (its latest run) or run directory. The merge
checks, before writing anything, that the shards belong together: one N, each K once
(all of 1..N unless ``allow_partial``), the same suite hash for every suite they share, no
item in two shards, and suite files that still have the recorded hashes. Then it writes
a new run (``<out>/runs/<id>/results.jsonl``, atomically) and its report through the
same writer as a pytest run, so the merged evalgate.json, summary.md, HTML page and gate
verdict are those one unsharded run would give for the same results. Inputs are only read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalgate.runs import RunPaths, latest_run_id, mark_latest, new_run_id
from evalgate.shard import SHARD_FILE, read_shard_record

if TYPE_CHECKING:
    from evalgate.report.gate import GateSettings
    from evalgate.report.write import WrittenReport
    from evalgate.results import CaseResult, ItemKey
    from evalgate.suite.model import Suite


class MergeError(ValueError):
    """Shards that cannot be merged (the message is one line naming what and where)."""


@dataclass(frozen=True, slots=True)
class ShardRun:
    """One shard's run directory and its ``shard.json``."""

    source: Path
    run_dir: Path
    index: int
    count: int
    suites: Mapping[str, Any]


def find_shard(source: Path) -> ShardRun:
    """The shard run in ``source`` (a run directory, or a reports directory's latest run)."""
    run_dir = source
    if not (source / SHARD_FILE).is_file():
        run_id = latest_run_id(source)
        if run_id is None:
            if not source.is_dir():
                raise MergeError(f"{source}: no such directory")
            raise MergeError(
                f"{source}: no shard results here (expected the reports directory or run "
                "directory of a `pytest --evalgate --evalgate-shard K/N` run)"
            )
        run_dir = source / "runs" / run_id
    try:
        record = read_shard_record(run_dir)
    except (OSError, ValueError) as exc:
        raise MergeError(f"{run_dir / SHARD_FILE}: cannot read: {exc}") from None
    if record is None:
        raise MergeError(
            f"{run_dir}: not a shard run (no {SHARD_FILE}); run it with --evalgate-shard K/N"
        )
    try:
        index, count = (int(v) for v in record["shard"])
        suites = dict(record["suites"])
        for name, entry in suites.items():
            if not isinstance(entry, Mapping) or not isinstance(entry.get("suite_hash"), str):
                raise ValueError(f"suites.{name}.suite_hash missing")
    except (KeyError, TypeError, ValueError) as exc:
        raise MergeError(f"{run_dir / SHARD_FILE}: not a shard record ({exc})") from None
    return ShardRun(source, run_dir, index, count, suites)


def check_shards(shards: Sequence[ShardRun], *, allow_partial: bool = False) -> None:
    """Refuses shards that do not form one run (one line naming the shards at fault)."""
    if not shards:
        raise MergeError("no shard directories given")
    counts = {s.count for s in shards}
    if len(counts) > 1:
        seen = ", ".join(f"{s.source} is {s.index}/{s.count}" for s in shards)
        raise MergeError(f"shards of different splits (N): {seen}")
    count = counts.pop()
    by_index: dict[int, ShardRun] = {}
    for shard in shards:
        if shard.index in by_index:
            raise MergeError(
                f"overlapping shards: {by_index[shard.index].source} and {shard.source} "
                f"are both shard {shard.index}/{count}"
            )
        by_index[shard.index] = shard
    missing = sorted(set(range(1, count + 1)) - set(by_index))
    if missing and not allow_partial:
        shown = ", ".join(f"{k}/{count}" for k in missing)
        raise MergeError(f"missing shard(s) {shown}; pass --allow-partial to merge without them")
    hashes: dict[str, tuple[str, Path]] = {}
    for shard in shards:
        for name, entry in shard.suites.items():
            recorded = hashes.setdefault(name, (entry["suite_hash"], shard.source))
            if recorded[0] != entry["suite_hash"]:
                raise MergeError(
                    f"suite {name!r} differs between shards: {recorded[1]} ran hash "
                    f"{recorded[0][:12]}, {shard.source} ran {entry['suite_hash'][:12]}"
                )


def check_output(shards: Sequence[ShardRun], out: Path) -> None:
    """Refuses an output directory that is a shard's own reports or run directory: the
    merged run would become that shard's latest run and overwrite its report."""
    target = out.resolve()
    for shard in shards:
        run_dir = shard.run_dir.resolve()
        if target in (run_dir.parent.parent, shard.source.resolve()) or target.is_relative_to(
            run_dir
        ):
            raise MergeError(
                f"-o {out}: is shard {shard.index}/{shard.count}'s own directory "
                f"({shard.source}); write the merge elsewhere so the shards stay as they are"
            )


def load_suites(shards: Sequence[ShardRun], rootdir: Path) -> dict[str, Suite]:
    """The suites the shards ran, from their files, unchanged since (hash checked)."""
    from evalgate.suite.errors import SuiteError
    from evalgate.suite.loader import load_suite

    suites: dict[str, Suite] = {}
    for shard in shards:
        for name, entry in shard.suites.items():
            if name in suites:
                continue
            path = Path(entry.get("path", ""))
            path = path if path.is_absolute() else rootdir / path
            try:
                suite = load_suite(path)
            except (OSError, SuiteError) as exc:
                raise MergeError(f"{path}: cannot load suite {name!r}: {exc}") from None
            if suite.suite_hash != entry["suite_hash"]:
                raise MergeError(
                    f"{path} has changed since the shards ran (suite {name!r}); merge in the "
                    "checkout the shards ran, or run the shards again"
                )
            suites[name] = suite
    return suites


def merged_results(shards: Sequence[ShardRun]) -> list[CaseResult]:
    """Every shard's latest result per item; an item in two shards, or outside its
    shard's recorded part, is refused."""
    from evalgate.results import latest_by_item, read_results

    owner: dict[ItemKey, Path] = {}
    merged: list[CaseResult] = []
    for shard in shards:
        part = {(name, case) for name, e in shard.suites.items() for case in e.get("cases", ())}
        for key, result in latest_by_item(read_results(shard.run_dir / "results.jsonl")).items():
            if (key.suite, key.case) not in part:
                # E.g. an unsharded run resumed as a shard: merging it would count the
                # case twice or take it from the wrong shard, so say so instead.
                raise MergeError(
                    f"{shard.source}: item {key.suite}::{key.case}[{key.config}] is not in "
                    f"shard {shard.index}/{shard.count}'s part of the suite ({SHARD_FILE})"
                )
            if key in owner:
                raise MergeError(
                    f"overlapping items: {key.suite}::{key.case}[{key.config}] is in "
                    f"both {owner[key]} and {shard.source}"
                )
            owner[key] = shard.source
            merged.append(result)
    return merged


def _write_results(paths: RunPaths, results: Sequence[CaseResult]) -> None:
    """The merged results.jsonl, complete or not at all (temp file, fsync, rename)."""
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    tmp = paths.run_dir / f".results.jsonl.{os.getpid()}"
    with open(tmp, "wb") as fh:
        for result in results:
            fh.write(result.to_line())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, paths.results)


def merge_shards(
    sources: Sequence[Path],
    out: Path,
    gate_settings: GateSettings,
    *,
    rootdir: Path,
    allow_partial: bool = False,
    stored_baseline: dict[str, Any] | None = None,
) -> tuple[RunPaths, WrittenReport, list[ShardRun]]:
    """Checks and merges the shards in ``sources`` into a new run under ``out``."""
    from evalgate.report.write import write_run_report

    shards = sorted((find_shard(s) for s in sources), key=lambda s: s.index)
    check_shards(shards, allow_partial=allow_partial)
    check_output(shards, out)
    suites = load_suites(shards, rootdir)
    results = merged_results(shards)
    paths = RunPaths(out.resolve(), new_run_id())
    _write_results(paths, results)
    mark_latest(paths)
    count = shards[0].count
    merged = {
        "count": count,
        "shards": [s.index for s in shards],
        "missing": sorted(set(range(1, count + 1)) - {s.index for s in shards}),
        "sources": [str(s.run_dir) for s in shards],
    }
    written = write_run_report(paths, suites, gate_settings, extra_document={"merged_from": merged})
    return paths, written, shards
