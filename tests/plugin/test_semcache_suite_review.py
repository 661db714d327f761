"""Hostile inputs to semantic cache suites: what the loader must refuse, what the
composition must survive (see test_semcache_suite.py for the suite used)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from evalgate.suite.errors import SuiteError
from evalgate.suite.loader import load_suite
from tests.plugin.test_semcache_suite import suite_text, traffic


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        # A YAML block scalar (`tenant: |`) ends in a newline: "a\n" and "a" would be two
        # tenants that never share, shown alike. `$` matched before the trailing newline.
        ('"cluster": "d0"', '"cluster": "d0", "tenant": "a\\n"', "tenant"),
        ('"cluster": "d0"', '"cluster": "d0\\n"', "cluster"),
        ('"cluster": "d0"', '"cluster": "d0\\u2028x"', "cluster"),  # a Unicode line break
        ('"cluster": "d0"', '"cluster": "d0\\u0085"', "cluster"),  # NEL, a C1 control
        ('"cluster": "d0"', '"cluster": "d0", "tenant": "  "', "tenant"),  # blank
        ('"cluster": "d0"', '"cluster": "d0", "tenant": " acme"', "tenant"),  # " acme" != "acme"
        # Ids go into pytest node ids and result keys: the same hole.
        ('"id": "d0-p0"', '"id": "d0-p0\\n"', "id"),
    ],
)
def test_labels_and_ids_with_line_breaks_or_blank_edges_are_refused(
    tmp_path: Path, old: str, new: str, key: str
) -> None:
    text = suite_text("http://127.0.0.1:9/v1", "k", traffic(2))
    assert old in text
    (tmp_path / "s.yaml").write_text(text.replace(old, new, 1))
    with pytest.raises(SuiteError) as caught:
        load_suite(tmp_path / "s.yaml")
    shown = str(caught.value)
    assert re.search(rf"s\.yaml:\d+: cases\[0\]\.{key}: expected", shown), shown
    assert "\n" not in shown


def test_labels_with_colons_stars_and_unicode_are_kept_as_written(tmp_path: Path) -> None:
    text = suite_text("http://127.0.0.1:9/v1", "k", traffic(2))
    old = '"cluster": "d0"'
    (tmp_path / "s.yaml").write_text(
        text.replace(old, '"cluster": "d0", "tenant": "acme:*:é x"', 1)
    )
    suite = load_suite(tmp_path / "s.yaml")
    assert suite.cases[0].tenant == "acme:*:é x"


def test_a_dataset_row_label_or_id_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    import json

    head = suite_text("http://127.0.0.1:9/v1", "k", traffic(1)).split("cases:\n")[0]
    (tmp_path / "s.yaml").write_text(head + "dataset: traffic.jsonl\n")
    good = {"id": "x", "question": "q", "answer": "a", "cluster": "c"}
    for bad, key in [({"tenant": "acme\n"}, "tenant"), ({"id": "x\n"}, "id")]:
        rows = [good, {**good, "id": "y", **bad}]
        (tmp_path / "traffic.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        with pytest.raises(SuiteError, match=rf"traffic\.jsonl:2: {key}: expected"):
            load_suite(tmp_path / "s.yaml")


def test_a_semantic_cache_over_a_batch_config_is_refused(tmp_path: Path) -> None:
    # The runtime's semantic cache serves live requests, and batch requests never reach it;
    # composed over a batch twin, the config was reported as a batch config (offline, not
    # ranked on latency) with lookup-latency hits. Routed and cascade configs refuse too.
    text = suite_text(
        "http://127.0.0.1:9/v1",
        "k",
        traffic(2),
        cache="{mode: semantic, max_wrong_hit: 0.1, alpha: 0.1, of: b}",
    ).replace("configs:\n", "configs:\n  - {id: b, tier: t, max_tokens: 30, batch: true}\n")
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(
        SuiteError, match=r"s\.yaml:\d+: configs\[2\]\.cache\.of: 'b' is a batch config"
    ):
        load_suite(tmp_path / "s.yaml")


def test_a_twin_served_from_the_response_cache_keeps_the_cache_figures(
    tmp_path: Path, fake_server: Any
) -> None:
    # The twin runs with `cache: true`; a second run (not a resume) serves every twin call
    # from the response cache: cost 0, the original cost in saved_usd. The semantic cache
    # saves the same calls as in the first run; before, its hits saved $0 and its cost
    # saving read "-" (0 of 0).
    import uuid

    from tests.helpers import run_evalgate
    from tests.plugin.test_semcache_suite import report

    text = suite_text(fake_server.base_url, uuid.uuid4().hex[:8], traffic(30))
    text = text.replace(
        "{id: fresh, tier: t, max_tokens: 30}", "{id: fresh, tier: t, max_tokens: 30, cache: true}"
    )
    text = text.replace("cache: {mode: semantic", "cache: {of: fresh, mode: semantic")
    (tmp_path / "s.yaml").write_text(text)
    records, saved = [], []
    for _ in range(2):
        proc = run_evalgate(tmp_path, "--evalgate-gate", "none")
        assert proc.returncode == 0, proc.stdout[-3000:]
        document = report(tmp_path)
        records.append(document["suites"]["doors"]["derivations"]["cached"])
        rows = [r for r in document["suites"]["doors"]["cases"] if r["config_id"] == "cached"]
        # The semantic hits (latency = lookup); the misses are the twin's rows, which the
        # second time are response-cache hits of the twin (cached, cost 0) as the twin's.
        hits = [r for r in rows if r["cached"] and r["latency_ms"] == 10.0]
        saved.append(sorted((r["case_id"], r["saved_usd"]) for r in hits))
    first, second = records
    assert first["hits"] > 0 and first["cost_saved_pct"] > 0
    assert second["hits"] == first["hits"]
    assert second["cost_saved_pct"] == pytest.approx(first["cost_saved_pct"])
    assert saved[1] == saved[0] and all(s > 0 for _, s in saved[0])


def test_traffic_without_twin_results_is_counted_and_said(tmp_path: Path, fake_server: Any) -> None:
    # A shard (or -k, or an unfinished run) holds part of the traffic: the cache is replayed
    # over fewer requests, so fewer paraphrases find an earlier one. Before, the record and
    # its line read like the whole traffic's.
    import uuid

    from tests.helpers import run_evalgate
    from tests.plugin.test_semcache_suite import report

    text = suite_text(fake_server.base_url, uuid.uuid4().hex[:8], traffic(30))
    (tmp_path / "s.yaml").write_text(text)
    proc = run_evalgate(tmp_path, "--evalgate-gate", "none", "--evalgate-shard", "1/2")
    assert proc.returncode == 0, proc.stdout[-3000:]
    record = report(tmp_path)["suites"]["doors"]["derivations"]["cached"]
    total = len(traffic(30))
    assert 0 < record["requests"] < total
    assert record["missing"] == total - record["requests"]
    shown = f"{record['missing']} of {total} requests have no results of 'fresh'"
    assert shown in record["note"] and shown in proc.stdout


def test_repeats_and_a_grader_raising_on_served_answers(tmp_path: Path, fake_server: Any) -> None:
    # Two repeats (each its own stream: a repeat is never served another repeat's answer)
    # and a python grader that raises on an answer for another door: the error is a failed
    # grade of that hit (a wrong hit, never a pass), and the run completes.
    import uuid

    from tests.helpers import run_evalgate
    from tests.plugin.test_semcache_suite import report

    (tmp_path / "doorcheck.py").write_text(
        "def strict(output, case):\n"
        "    if case.vars['answer'] not in output:\n"
        "        raise ValueError('an answer for another door')\n"
        "    return True\n"
    )
    text = suite_text(fake_server.base_url, uuid.uuid4().hex[:8], traffic(30))
    text = text.replace("assert:\n", "assert:\n  - {type: python, function: doorcheck.strict}\n")
    text = text.replace("max_tokens: 30", "max_tokens: 30, repeats: 2")
    (tmp_path / "s.yaml").write_text(text)
    proc = run_evalgate(tmp_path, "--evalgate-gate", "none")
    assert proc.returncode == 0, proc.stdout[-3000:]
    document = report(tmp_path)
    record = document["suites"]["doors"]["derivations"]["cached"]
    assert record["requests"] == 2 * len(traffic(30)) and record["missing"] == 0
    # At 0.80 unguarded, near-misses are served another door's answer: the grader raised
    # on them, and they count as wrong hits.
    assert record["fixed"][0]["wrong_hit_rate"]["estimate"] > 0
    rows = [r for r in document["suites"]["doors"]["cases"] if r["config_id"] == "cached"]
    assert len(rows) == 2 * len(traffic(30))
    hits = [r for r in rows if r["cached"]]
    assert hits and len(hits) == record["hits"]
    for row in hits:
        answer = next(t["answer"] for t in traffic(30) if t["id"] == row["case_id"])
        assert row["passed"] == (answer in row["output"])


def test_a_lone_surrogate_in_the_traffic_loses_no_report(tmp_path: Path, fake_server: Any) -> None:
    # json.loads makes a lone surrogate of a dataset's "\ud800". Before: the report's
    # prompt hash and evalgate.json could not encode it, and the run ended without a
    # report; the semantic cache's embedding failed the whole config.
    import json
    import uuid

    from tests.helpers import run_evalgate
    from tests.plugin.test_semcache_suite import report

    rows = traffic(30)
    rows[5] = {**rows[5], "question": rows[5]["question"] + " \ud800"}
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    head = suite_text(fake_server.base_url, uuid.uuid4().hex[:8], traffic(1)).split("cases:\n")
    (tmp_path / "s.yaml").write_text(head[0] + "dataset: t.jsonl\n")
    proc = run_evalgate(tmp_path, "--evalgate-gate", "none")
    assert "html report not written" not in proc.stdout, proc.stdout[-3000:]
    document = report(tmp_path)
    section = document["suites"]["doors"]
    record = section["derivations"]["cached"]
    assert "error" not in record and record["requests"] == len(rows) and record["hits"] > 0
    fresh = {r["case_id"]: r for r in section["cases"] if r["config_id"] == "fresh"}
    assert len(fresh) == len(rows)  # the hostile row is there (its call's error recorded)
    assert "\ud800" in json.dumps(document, ensure_ascii=False)  # read back unchanged
    assert (tmp_path / "reports" / "evalgate.html").is_file()
    assert (tmp_path / "reports" / "summary.md").is_file()
