"""evalgate export and --evalgate-export, from a real eval run on the fake server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evalgate.cli import main as cli
from evalgate.policy.export import ExportError, export_policy
from evalgate.runtime.errors import PolicyError
from evalgate.runtime.policy_file import load_policy_file, read_policy_data
from tests.helpers import run_evalgate
from tests.runtime.evalrun import write_suite


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, fake_server) -> Path:
    """One real eval run, exported at the end with --evalgate-export."""
    directory = tmp_path_factory.mktemp("evalrun")
    write_suite(directory, fake_server.base_url)
    proc = run_evalgate(directory, "--evalgate-export", "policy.py")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "evalgate export: wrote policy.py (doc-qa)" in proc.stdout
    return directory


@pytest.fixture
def work(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the run (report, suite, policy) as the working directory."""
    for name in ("ctx.yaml", "policy.py"):
        shutil.copy(run_dir / name, tmp_path / name)
    (tmp_path / "reports").mkdir()
    shutil.copy(run_dir / "reports" / "evalgate.json", tmp_path / "reports" / "evalgate.json")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_export_writes_the_recommended_config_with_its_evidence(work: Path) -> None:
    assert cli(["export", "-o", "exported.py"]) == 0
    policy = load_policy_file(work / "exported.py")
    feature = policy.features["doc-qa"]
    report = json.loads((work / "reports" / "evalgate.json").read_text())
    settings = report["suites"]["ctx"]["settings"]
    assert feature.primary.model == settings["configs"]["large-trim50"]["model"]
    assert feature.primary.api_base == settings["configs"]["large-trim50"]["api_base"]
    assert feature.trim is not None and feature.trim.ratio == 0.5
    assert (feature.trim.variable, feature.trim.query) == ("context", "question")
    assert feature.max_tokens == 48 and feature.temperature == 0.0
    assert feature.cache.mode == "exact" and feature.cache.ttl_s == 86400.0  # temperature 0
    assert feature.routes[1:] == ()  # the baseline is the same model: no fallback
    evidence = feature.evidence
    assert evidence["suite_hash"] == settings["suite_hash"]
    assert evidence["run_id"] == report["run_id"] and evidence["date"] == report["created"]
    assert evidence["config"] == "large-trim50" and evidence["verdict"] == "PASS"
    assert evidence["n_paired"] == 70
    assert evidence["delta"]["estimate"] == 0.0 and evidence["savings_pct"]["estimate"] > 20
    expected = evidence["expected"]
    stats = report["suites"]["ctx"]["stats"]["configs"]["large-trim50"]
    assert expected["cost_per_call_usd"] == pytest.approx(stats["cost_per_case"]["estimate"], 1e-5)
    assert expected["latency_p95_ms"] == pytest.approx(stats["latency_p95"]["estimate"], 1e-3)
    text = (work / "exported.py").read_text()
    assert "api_key" not in text.replace("api_key_env", "")  # never a key


def test_same_input_same_bytes_and_the_session_hook_agrees(work: Path) -> None:
    assert cli(["export", "-o", "a.py"]) == 0
    assert cli(["export", "-o", "b.py"]) == 0
    assert (work / "a.py").read_bytes() == (work / "b.py").read_bytes()
    # --evalgate-export wrote the same policy at the end of the run.
    assert (work / "a.py").read_bytes() == (work / "policy.py").read_bytes()


def test_the_policy_is_plain_python_data(work: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import runpy; print(sorted(runpy.run_path('policy.py')['POLICY']))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip() == "['features', 'version']"


def test_reexport_of_one_feature_keeps_the_others(work: Path) -> None:
    data, _ = read_policy_data(work / "policy.py")
    other = dict(data["features"]["doc-qa"], model="openai/other")
    data["features"]["billing"] = other
    from evalgate.policy.render import render_policy

    (work / "policy.py").write_text(render_policy(data))
    assert cli(["export", "--suite", "ctx", "--config", "large", "-o", "policy.py"]) == 0
    policy = load_policy_file(work / "policy.py")
    assert sorted(policy.features) == ["billing", "doc-qa"]
    assert policy.features["billing"].primary.model == "openai/other"
    assert policy.features["doc-qa"].evidence["config"] == "large"
    assert policy.features["doc-qa"].evidence["verdict"] == "BASELINE"


def test_a_changed_suite_file_is_refused_in_one_line(work: Path, capsys) -> None:
    suite = work / "ctx.yaml"
    suite.write_text(suite.read_text().replace("max_tokens: 48", "max_tokens: 40"))
    with pytest.raises(SystemExit) as excinfo:
        cli(["export", "-o", "new.py"])
    message = str(excinfo.value)
    assert excinfo.value.code == 2
    assert message.startswith("ctx.yaml has changed since run ")
    assert capsys.readouterr().err == f"evalgate: error: {message}\n"
    assert "suite hash" in message and "\n" not in message
    assert not (work / "new.py").exists()


def test_match_names_the_suite_file_to_check(work: Path) -> None:
    shutil.copy(work / "ctx.yaml", work / "moved.yaml")
    (work / "ctx.yaml").unlink()
    assert cli(["export", "-o", "ok.py", "--match", "moved.yaml"]) == 0
    (work / "moved.yaml").write_text((work / "moved.yaml").read_text() + "  # edit\n" * 0)
    text = (work / "moved.yaml").read_text().replace("code only", "code alone")
    (work / "moved.yaml").write_text(text)
    with pytest.raises(ExportError, match=r"moved\.yaml has changed since run"):
        export_policy(work / "reports" / "evalgate.json", work / "x.py", match=work / "moved.yaml")


def test_a_suite_without_a_recommendation_is_skipped_with_its_reason(work: Path, capsys) -> None:
    report = json.loads((work / "reports" / "evalgate.json").read_text())
    section = report["suites"]["ctx"]
    section["stats"]["recommendation"] = None
    section["stats"]["notes"] = ["no recommendation: no candidate passes non-inferiority"]
    (work / "reports" / "evalgate.json").write_text(json.dumps(report))
    assert cli(["export", "-o", "none.py"]) == 1
    out = capsys.readouterr().out
    assert "ctx: skipped: no recommendation: no candidate passes non-inferiority" in out
    assert not (work / "none.py").exists()
    assert cli(["export", "--config", "large", "-o", "named.py"]) == 0  # --config still works


def test_unknown_config_and_broken_existing_policy_are_one_line(work: Path) -> None:
    with pytest.raises(SystemExit, match=r"no config 'huge'; configs: large, large-trim50"):
        cli(["export", "--config", "huge", "-o", "p.py"])
    (work / "broken.py").write_text('POLICY = {"version": 1, "features": {"x": {"modle": "m"}}}\n')
    with pytest.raises(SystemExit, match=r"broken\.py:1: features\.x\.modle: unknown key"):
        cli(["export", "-o", "broken.py"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("POLICY = [1]\n", r"p\.py:1: POLICY must be a dict"),
        ("POLICY = {'version': 1, 'features': {}}\nPOLICY2 = 1\n", None),
        ("x = 1\n", r"p\.py: no `POLICY = \{\.\.\.\}` assignment found"),
        ("POLICY = {\n 'version': 1,\n 'features': __import__('os')}\n", r"plain literal data"),
        (
            "POLICY = {\n 'version': 1,\n 'features': {\n  'f': {\n   'model': 'm',\n"
            "   'cache': {'mode': 'fuzzy'}}}}\n",
            r"p\.py:6: features\.f\.cache\.mode: "
            r"expected one of exact, semantic, off, found 'fuzzy'",
        ),
        (
            "POLICY = {'version': 1, 'features': {'f': {'model': 'm', 'max_tokens': 0}}}\n",
            r"features\.f\.max_tokens: expected an integer >= 1, found 0",
        ),
        ("POLICY = {'version': 1, 'features': {'f': {}}}\n", r"features\.f: missing key 'model'"),
        ("POLICY = {\n", r"p\.py:1: not valid Python"),
    ],
)
def test_malformed_policies_name_file_line_and_key(
    tmp_path: Path, text: str, message: str | None
) -> None:
    path = tmp_path / "p.py"
    path.write_text(text)
    if message is None:
        assert load_policy_file(path).features == {}
        return
    with pytest.raises(PolicyError, match=message) as excinfo:
        load_policy_file(path)
    assert "\n" not in str(excinfo.value)
