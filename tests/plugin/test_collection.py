"""Collection: which files become suites, item ids, selection, and inertness."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

SUITE = """\
suite: mini
tiers:
  small: {model: openai/fake, api_base: "http://127.0.0.1:9/v1"}
prompt:
  - {role: user, content: "{{ question }}"}
assert:
  - {type: contains, value: "{{ answer }}"}
configs:
  - {id: base, tier: small}
  - {id: rep, tier: small, repeats: 2}
cases:
  - {id: france, vars: {question: "Capital of France?", answer: Paris}}
  - {id: japan, vars: {question: "Capital of Japan?", answer: Tokyo}}
"""


def collected_ids(pytester: pytest.Pytester, *args: str) -> list[str]:
    result = pytester.runpytest_subprocess("--evalgate", "--collect-only", "-q", *args)
    return [line for line in result.outlines if "::" in line]


def test_items_have_stable_ids_and_never_repeat_a_case_back_to_back(
    pytester: pytest.Pytester,
) -> None:
    # Diagonal order (case + config + repeat x configs): a case's configs stay close in
    # time, but the same prompt is never sent twice in a row (a server's prefix cache
    # would serve the second from the first).
    pytester.makefile(".yaml", s=SUITE)
    assert collected_ids(pytester) == [
        "s.yaml::mini::france[base]",
        "s.yaml::mini::japan[base]",
        "s.yaml::mini::france[rep-r1]",
        "s.yaml::mini::japan[rep-r1]",
        "s.yaml::mini::france[rep-r2]",
        "s.yaml::mini::japan[rep-r2]",
    ]


def test_repeats_never_put_a_case_twice_in_a_row(pytester: pytest.Pytester) -> None:
    # Two cases, two configs with two repeats each: plain diagonals would run a case twice
    # in a row where one repeat's diagonal meets the next.
    two = SUITE.replace("{id: base, tier: small}", "{id: base, tier: small, repeats: 2}")
    assert two != SUITE
    pytester.makefile(".yaml", s=two)
    ids = collected_ids(pytester)
    cases = [i.split("::")[-1].split("[")[0] for i in ids]
    assert len(ids) == len(set(ids)) == 8
    assert all(a != b for a, b in itertools.pairwise(cases)), ids


def test_ids_do_not_depend_on_case_order(pytester: pytest.Pytester) -> None:
    swapped = SUITE.replace(
        '  - {id: france, vars: {question: "Capital of France?", answer: Paris}}\n', ""
    ).replace(
        "cases:\n",
        'cases:\n  - {id: france, vars: {question: "Capital of France?", answer: Paris}}\n',
        1,
    )
    pytester.makefile(".yaml", s=SUITE)
    before = set(collected_ids(pytester))
    pytester.makefile(".yaml", s=swapped)
    assert set(collected_ids(pytester)) == before


def test_keyword_selection(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", s=SUITE)
    assert collected_ids(pytester, "-k", "japan and base") == ["s.yaml::mini::japan[base]"]


def test_yaml_without_suite_key_is_ignored(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", s=SUITE, other="name: ci\njobs: {build: {steps: []}}\n")
    ids = collected_ids(pytester)
    assert ids and all(i.startswith("s.yaml::") for i in ids)


def test_without_flag_suites_are_not_collected(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", s=SUITE)
    result = pytester.runpytest_subprocess("--collect-only", "-q")
    assert not [line for line in result.outlines if "::" in line]


def test_plugin_imports_nothing_heavy_when_unused() -> None:
    code = (
        "import sys, pytest\n"
        "pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', '/nonexistent'])\n"
        "heavy = [m for m in ('litellm', 'scipy', 'pandas', 'jinja2') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    ).stdout
    assert (
        "evalgate"
        in subprocess.run(
            [sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True, check=False
        ).stdout
    )
    assert "HEAVY []" in out


def test_suite_with_a_bom_is_collected(pytester: pytest.Pytester) -> None:
    pytester.path.joinpath("bom.yaml").write_bytes(b"\xef\xbb\xbf" + SUITE.encode())
    assert "bom.yaml::mini::france[base]" in collected_ids(pytester)


def test_latin1_suite_is_a_collection_error_not_skipped(pytester: pytest.Pytester) -> None:
    pytester.path.joinpath("latin.yaml").write_bytes(
        SUITE.replace("Paris", "Pâris").encode("latin-1")
    )
    result = pytester.runpytest_subprocess("--evalgate", "--collect-only", "-q")
    assert any(
        line.startswith("latin.yaml:") and "not UTF-8 text (byte 0xe2)" in line
        for line in result.outlines
    ), result.outlines
    assert result.ret != 0


def test_template_error_for_one_case_is_one_line(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", s=SUITE.replace("{{ question }}", "{{ question.titel }}"))
    result = pytester.runpytest_subprocess("--evalgate", "--collect-only", "-q")
    text = result.stdout.str()
    assert "Traceback" not in text
    assert any(
        line.startswith("s.yaml:12: case 'france': prompt[0]: template error: UndefinedError")
        for line in result.outlines
    ), text


def test_one_node_id_parser() -> None:
    from evalgate.nodeid import item_name, parse_nodeid, resolve_label
    from evalgate.suite.model import Config

    configs = [Config(id="a", tier="t", repeats=2), Config(id="b:x", tier="t")]
    parsed = parse_nodeid("dir/s.yaml::mini::ns:case[a-r2]")
    assert parsed is not None and (parsed.path, parsed.suite, parsed.case) == (
        "dir/s.yaml",
        "mini",
        "ns:case",
    )
    assert resolve_label(configs, parsed.label) == (configs[0], 1)
    assert resolve_label(configs, "b:x") == (configs[1], 0)
    assert resolve_label(configs, "a") is None and resolve_label(configs, "a-r3") is None
    assert parse_nodeid("tests/test_x.py::test_a") is None
    assert item_name("c", "a", 1, 2) == "c[a-r2]"
