"""The policy file's `limits` section: read, validated, exported (`evalgate export --limits`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from evalgate.cli import main as cli
from evalgate.policy.render import render_policy
from evalgate.runtime import Limits, PolicyError
from evalgate.runtime.policy_file import load_policy_file, read_policy_data
from tests.helpers import run_evalgate
from tests.runtime.evalrun import write_suite

FEATURE = {"model": "openai/m", "api_base": "http://127.0.0.1:9/v1", "price": None}


def write(tmp_path: Path, limits: object) -> Path:
    path = tmp_path / "policy.py"
    path.write_text(render_policy({"version": 1, "features": {"qa": FEATURE}, "limits": limits}))
    return path


def test_the_section_becomes_rules(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "users": {
                "*": {"requests_per_minute": 60, "tokens_per_day": 1000},
                "vip": {"cost_per_day_usd": 10, "count_cache_hits": False},
            },
            "tenants": {"acme": {"cost_per_day_usd": 2.5}},
            "features": {"qa": {"*": {"requests_per_minute": 5}}},
        },
    )
    rules = load_policy_file(path).limits
    assert rules.users["*"] == Limits(requests_per_minute=60, tokens_per_day=1000)
    assert rules.users["vip"] == Limits(cost_per_day_usd=10.0, count_cache_hits=False)
    assert rules.tenants["acme"].cost_per_day_usd == 2.5
    assert rules.features["qa"]["*"].requests_per_minute == 5
    assert not load_policy_file(write(tmp_path, None)).limits  # null: no limits


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"user": {}}, r"limits\.user: unknown key, .*did you mean 'users'"),
        ({"users": {"*": {"cost_per_day": 1}}}, r"did you mean 'cost_per_day_usd'"),
        ({"users": {"*": {"cost_per_day_usd": "1.0"}}}, r"finite number >= 0"),
        ({"users": {"*": {"tokens_per_day": -1}}}, r"finite number >= 0"),
        ({"users": {"*": {"requests_per_minute": 2.5}}}, r"expected a whole number"),
        ({"users": {"*": {"count_cache_hits": "yes"}}}, r"expected True or False"),
        ({"users": {"*": 5}}, r"limits\.users\.\*: expected a dict of limits"),
        ({"features": {"qaa": {}}}, r"limits\.features\.qaa: unknown key.*did you mean 'qa'"),
        ([1], r"limits: expected a dict"),
    ],
)
def test_a_bad_section_is_one_line_with_file_line_and_key(tmp_path, limits, message) -> None:
    path = write(tmp_path, limits)
    with pytest.raises(PolicyError, match=message) as bad:
        load_policy_file(path)
    text = str(bad.value)
    assert text.startswith(f"{path}:") and "\n" not in text
    _, line, key, _ = text.split(":", 3)
    last = key.strip().rsplit(".", 1)[-1]
    assert f"'{last}'" in path.read_text().splitlines()[int(line) - 1]


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory, fake_server) -> Path:
    directory = tmp_path_factory.mktemp("evalrun")
    write_suite(directory, fake_server.base_url)
    proc = run_evalgate(directory)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return directory


def test_export_takes_limits_from_a_flag_and_keeps_them(
    report_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "reports").mkdir()
    shutil.copy(report_dir / "reports" / "evalgate.json", tmp_path / "reports" / "evalgate.json")
    shutil.copy(report_dir / "ctx.yaml", tmp_path / "ctx.yaml")
    monkeypatch.chdir(tmp_path)
    section = {"users": {"*": {"cost_per_day_usd": 1.5}}, "features": {"doc-qa": {}}}
    Path("limits.json").write_text(json.dumps(section))
    assert cli(["export", "-o", "policy.py", "--limits", "limits.json"]) == 0
    assert read_policy_data(Path("policy.py"))[0]["limits"] == section
    assert load_policy_file("policy.py").limits.users["*"].cost_per_day_usd == 1.5
    # Without the flag, an update keeps the section.
    assert cli(["export", "-o", "policy.py"]) == 0
    assert read_policy_data(Path("policy.py"))[0]["limits"] == section
    # A bad file is refused in one line naming it and the key; the policy is untouched.
    before = Path("policy.py").read_bytes()
    Path("bad.json").write_text(json.dumps({"users": {"*": {"rpm": 1}}}))
    with pytest.raises(SystemExit, match=r"bad\.json: limits\.users\.\*\.rpm: unknown key"):
        cli(["export", "-o", "policy.py", "--limits", "bad.json"])
    Path("nan.json").write_text('{"users": {"*": {"cost_per_day_usd": NaN}}}')
    with pytest.raises(
        SystemExit, match=r"nan\.json: limits\.users\.\*\.cost_per_day_usd: expected a finite"
    ):
        cli(["export", "-o", "policy.py", "--limits", "nan.json"])
    Path("broken.json").write_text("{users")
    with pytest.raises(SystemExit, match=r"broken\.json: the limits are not valid JSON"):
        cli(["export", "-o", "policy.py", "--limits", "broken.json"])
    assert Path("policy.py").read_bytes() == before
