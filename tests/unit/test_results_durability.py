"""results.jsonl survives torn lines, resumed appends, odd text and old lines."""

from __future__ import annotations

import json
from pathlib import Path

from evalgate.results import (
    CallResult,
    CaseResult,
    ItemKey,
    ReadStats,
    ResultsWriter,
    latest_by_item,
    read_results,
)


def result(case: str, output: str = "ok", config: str = "a", repeat: int = 0) -> CaseResult:
    return CaseResult(
        item_key=f"s::{case}[{config}]",
        run_id="r",
        suite="s",
        feature="s",
        suite_hash="h",
        case_id=case,
        config_id=config,
        repeat=repeat,
        group=None,
        tier="t",
        model="m",
        must_pass=False,
        call=CallResult(output=output),
    )


def write(path: Path, *results: CaseResult) -> None:
    writer = ResultsWriter(path)
    for r in results:
        writer.append(r)
    writer.close()


def test_last_line_torn_inside_a_multibyte_character_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    write(path, result("c1"), result("c2", output="héllo wörld ✓"))
    data = path.read_bytes()
    cut = data.rindex("✓".encode()) + 1  # inside the 3-byte character
    path.write_bytes(data[:cut])
    stats = ReadStats()
    assert [r.case_id for r in read_results(path, stats)] == ["c1"]
    assert stats.torn == 1


def test_a_resumed_writer_seals_a_torn_line_and_loses_nothing_after_it(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    write(path, result("c1"), result("c2", output="é" * 50))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])  # c2 torn (killed mid-write)
    write(path, result("c3"), result("c4"))
    stats = ReadStats()
    assert [r.case_id for r in read_results(path, stats)] == ["c1", "c3", "c4"]
    assert stats.torn == 1


def test_a_lone_surrogate_in_an_output_keeps_the_result(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    write(path, result("c1", output="bad \ud800 text ünïcode"), result("c2"))
    read = list(read_results(path))
    assert [r.case_id for r in read] == ["c1", "c2"]
    assert read[0].call.output == "bad \ud800 text ünïcode"


def test_a_line_of_another_shape_is_counted_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    write(path, result("c1"))
    with path.open("a") as fh:
        fh.write(json.dumps({"item_key": "x", "unknown": 1}) + "\n")
        fh.write("[1, 2]\n")
    write(path, result("c2"))
    stats = ReadStats()
    assert [r.case_id for r in read_results(path, stats)] == ["c1", "c2"]
    assert stats.unreadable == 2


def test_lines_written_before_the_hash_fields_still_load(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    line = json.loads(result("c1").to_json())
    del line["request_hash"], line["grading_hash"]
    path.write_text(json.dumps(line) + "\n")
    (old,) = read_results(path)
    assert old.case_id == "c1" and old.request_hash == "" and old.grading_hash == ""


def test_items_are_keyed_by_fields_not_by_their_label(tmp_path: Path) -> None:
    # Config `a` repeated twice and a config named `a-r1` once used to share "s::c[a-r1]".
    from dataclasses import replace

    same_label = [
        replace(result("c", config="a", repeat=0), item_key="s::c[a-r1]"),
        replace(result("c", config="a-r1"), item_key="s::c[a-r1]"),
    ]
    latest = latest_by_item(same_label)
    assert set(latest) == {ItemKey("s", "c", "a", 0), ItemKey("s", "c", "a-r1", 0)}
