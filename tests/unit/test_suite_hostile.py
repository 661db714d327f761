"""Hostile and careless suite files: each is one located error line, or loads as meant."""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import pytest

from evalgate.suite import SuiteError, declares_suite, load_suite

GOOD = """\
suite: good
tiers:
  small: {model: openai/fake}
prompt:
  - {role: user, content: "{{ question }}"}
configs:
  - {id: base, tier: small}
cases:
  - {id: c1, vars: {question: "hi"}}
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # errors name files relative to the working directory


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path) -> str:
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def variant(replace: str, with_: str) -> str:
    assert replace in GOOD
    return GOOD.replace(replace, with_, 1)


CONFIG = "  - {id: base, tier: small}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD + "gate: {margin: .nan}\n", r"^s\.yaml:10: gate\.margin: expected a finite number"),
        (GOOD + "gate: {alpha: .nan}\n", r"^s\.yaml:10: gate\.alpha: expected a finite number"),
        (variant(CONFIG, "  - {id: base, tier: small, context_trim: .nan}"), r"context_trim"),
        (variant(CONFIG, "  - {id: base, tier: small, temperature: .NaN}"), r"temperature"),
        (GOOD + "threshold: .nan\n", r"^s\.yaml:10: threshold: expected a finite number"),
        (
            variant("{model: openai/fake}", "{model: openai/fake, timeout_s: .inf}"),
            r"^s\.yaml:3: tiers\.small\.timeout_s: expected a finite number, found inf$",
        ),
        (
            variant(
                "{model: openai/fake}",
                "{model: m, price: {input_per_mtok: .nan, output_per_mtok: 1}}",
            ),
            r"tiers\.small\.price\.input_per_mtok: expected a finite number",
        ),
        (
            GOOD + "assert:\n  - {type: numeric, value: 1, tolerance: .nan}\n",
            r"^s\.yaml:11: assert\[0\]\.tolerance: expected finite numbers, found nan$",
        ),
        (
            GOOD + "gate: {slo: {p95_latency_ms: .inf}}\n",
            r"gate\.slo\.p95_latency_ms: expected a finite number",
        ),
    ],
    ids=[
        "margin",
        "alpha",
        "trim",
        "temperature",
        "threshold",
        "timeout",
        "price",
        "grader",
        "slo",
    ],
)
def test_nan_and_infinity_are_rejected(tmp_path: Path, text: str, expected: str) -> None:
    assert re.search(expected, error_of(write(tmp_path, text)))


def test_config_named_like_a_repeat_of_another_is_refused(tmp_path: Path) -> None:
    text = variant(CONFIG, "  - {id: a, tier: small, repeats: 2}\n  - {id: a-r1, tier: small}")
    assert error_of(write(tmp_path, text)) == (
        "s.yaml:8: configs[1].id: config id 'a-r1' reads as repeat 1 of config 'a' (items "
        "of repeated configs are named 'case[a-rN]'); rename it"
    )


@pytest.mark.parametrize("bad", ["a::b", "x::", "a:::b"])
def test_ids_cannot_hold_double_colons(tmp_path: Path, bad: str) -> None:
    text = variant("{id: c1,", f'{{id: "{bad}",')
    assert "never '::'" in error_of(write(tmp_path, text))


def test_single_colons_are_allowed_in_ids(tmp_path: Path) -> None:
    text = variant("{id: c1,", '{id: "ns:c1",')
    assert load_suite(write(tmp_path, text)).cases[0].id == "ns:c1"


def test_dataset_template_cannot_run_commands(tmp_path: Path) -> None:
    from evalgate.suite.templates import render

    marker = tmp_path / "pwned"
    payload = "{{ cycler.__init__.__globals__.os.popen('touch " + str(marker) + "').read() }}"
    with pytest.raises(Exception) as info:
        render(payload, {})
    assert not marker.exists()
    assert type(info.value).__name__ in ("SecurityError", "UndefinedError")


def test_dataset_row_assert_payload_is_inert_when_graded(tmp_path: Path) -> None:
    from evalgate.graders.grading import grade_output
    from evalgate.results import CallResult

    marker = tmp_path / "pwned"
    payload = "{{ cycler.__init__.__globals__.os.popen('touch " + str(marker) + "').read() }}"
    (tmp_path / "rows.jsonl").write_text(
        '{"id": "a", "question": "q", "assert": [{"type": "contains", "value": "'
        + payload.replace('"', '\\"')
        + '"}]}\n'
    )
    suite = load_suite(
        write(tmp_path, GOOD.replace(GOOD[GOOD.index("cases:") :], "dataset: rows.jsonl\n"))
    )
    case = suite.cases[0]
    try:
        grades, score, passed = grade_output("x", case, case.graders, None, CallResult("x"))
    except Exception as exc:  # the sandbox refuses the attribute: an error, never a command
        assert type(exc).__name__ == "SecurityError"
    else:
        assert score == 0 and not passed and grades[0].error
    assert not marker.exists()


@pytest.mark.parametrize("encoding", ["utf-8-sig", "latin-1"])
def test_bom_and_latin1_suites_are_collected(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(GOOD.replace("hi", "café").encode(encoding))
    assert declares_suite(path)
    if encoding == "utf-8-sig":
        assert load_suite(path).cases[0].vars["question"] == "café"
    else:
        assert error_of(path) == ("s.yaml:9: not UTF-8 text (byte 0xe9); save the file as UTF-8")


def test_bom_only_is_not_a_suite_unless_it_says_so(tmp_path: Path) -> None:
    path = tmp_path / "ci.yaml"
    path.write_bytes(codecs.BOM_UTF8 + b"jobs: {}\n")
    assert not declares_suite(path)


def test_alias_bomb_is_one_line_and_cheap(tmp_path: Path) -> None:
    lines = ["suite: bomb", 'a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, 10):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    path = write(tmp_path, "\n".join(lines) + "\n")
    assert path.stat().st_size < 1000
    assert re.match(
        r"^s\.yaml:\d+: a\d(\[\d+\])*: aliases expand to more than 1,000,000 values", error_of(path)
    )


def test_shared_aliases_load(tmp_path: Path) -> None:
    text = variant(
        "configs:\n",
        "configs:\n  - &d {id: x, tier: small, max_tokens: 9}\n  - {<<: *d, id: y}\n",
    )
    suite = load_suite(write(tmp_path, text))
    assert [(c.id, c.max_tokens) for c in suite.configs] == [("x", 9), ("y", 9), ("base", 256)]


def test_merge_keys_with_overrides_are_valid(tmp_path: Path) -> None:
    text = variant(
        '  - {id: c1, vars: {question: "hi"}}',
        '  - &base {id: c1, vars: {question: "hi"}}\n  - {<<: *base, id: c2}',
    )
    suite = load_suite(write(tmp_path, text))
    assert [c.id for c in suite.cases] == ["c1", "c2"]


def test_a_real_duplicate_beside_a_merge_is_still_refused(tmp_path: Path) -> None:
    text = variant(
        '  - {id: c1, vars: {question: "hi"}}',
        '  - &base {id: c1, vars: {question: "hi"}}\n  - {<<: *base, id: c2, id: c3}',
    )
    assert "duplicate key" in error_of(write(tmp_path, text))


@pytest.mark.parametrize(
    ("replace", "with_", "expected"),
    [
        (
            '{id: c1, vars: {question: "hi"}}',
            "{id: c1, vars: 5}",
            r"^s\.yaml:9: cases\[0\]\.vars: expected a mapping of variable names, found int",
        ),
        (
            '{question: "hi"}',
            '{question: "hi", 1: "x"}',
            r"^s\.yaml:9: cases\[0\]\.vars\.1: expected a variable name",
        ),
        (
            '{question: "hi"}',
            '{question: "hi", [1, 2]: "x"}',
            r"^s\.yaml:9: cases\[0\]\.vars: a mapping key must be a plain value",
        ),
        ("cases:", "loop: &l [*l]\ncases:", r"^s\.yaml:8: loop: invalid YAML|anchor"),
        ("hi", "h\x07i", r"^s\.yaml:9: invalid YAML: unacceptable character #x0007$"),
    ],
    ids=["vars-int", "mixed-keys", "list-key", "self-anchor", "control-char"],
)
def test_tracebacks_become_located_lines(
    tmp_path: Path, replace: str, with_: str, expected: str
) -> None:
    assert re.search(expected, error_of(write(tmp_path, variant(replace, with_))))


def test_self_referencing_mapping_anchor(tmp_path: Path) -> None:
    text = variant("cases:", "loop: &l {a: *l}\ncases:")
    assert re.match(
        r"^s\.yaml:8: loop(\.a)?: .*(anchor|invalid YAML)", error_of(write(tmp_path, text))
    )


def test_deep_nesting_is_one_line(tmp_path: Path) -> None:
    text = variant("cases:", "deep: " + "[" * 1200 + "]" * 1200 + "\ncases:")
    assert re.match(r"^s\.yaml:8: .*nested deeper than", error_of(write(tmp_path, text)))


def dataset_suite(tmp_path: Path, name: str, data: bytes, extra: str = "") -> Path:
    (tmp_path / name).write_bytes(data)
    return write(tmp_path, GOOD.replace(GOOD[GOOD.index("cases:") :], f"dataset: {name}\n{extra}"))


def test_csv_row_with_an_extra_field(tmp_path: Path) -> None:
    path = dataset_suite(tmp_path, "rows.csv", b"id,question\na,q1\nb,q2,oops\n")
    assert error_of(path) == "rows.csv:3: row has 3 fields, the header has 2 (id, question)"


def test_csv_field_over_the_csv_module_limit_loads(tmp_path: Path) -> None:
    long = "word " * 40_000
    path = dataset_suite(tmp_path, "rows.csv", f'id,question\na,"{long}"\n'.encode())
    assert load_suite(path).cases[0].vars["question"] == long


@pytest.mark.parametrize("name", ["rows.csv", "rows.jsonl"])
def test_non_utf8_dataset(tmp_path: Path, name: str) -> None:
    data = (
        b"id,question\na,q1\nb,caf\xe9\n"
        if name.endswith(".csv")
        else b'{"id": "a", "question": "q"}\n{"id": "b", "question": "caf\xe9"}\n'
    )
    assert error_of(dataset_suite(tmp_path, name, data)) == (
        f"{name}:{3 if name.endswith('.csv') else 2}: not UTF-8 text (byte 0xe9); "
        "save the file as UTF-8"
    )


@pytest.mark.parametrize("name", ["rows.csv", "rows.jsonl"])
def test_datasets_with_a_bom_load(tmp_path: Path, name: str) -> None:
    data = b"id,question\na,q1\n" if name.endswith(".csv") else b'{"id": "a", "question": "q1"}\n'
    suite = load_suite(dataset_suite(tmp_path, name, codecs.BOM_UTF8 + data))
    assert [(c.id, c.vars["question"]) for c in suite.cases] == [("a", "q1")]


def test_short_csv_row_is_an_error_naming_case_and_variable(tmp_path: Path) -> None:
    path = dataset_suite(tmp_path, "rows.csv", b"id,question\na,q1\nb\n")
    assert error_of(path) == (
        "rows.csv:3: case 'b': variable 'question' has no value (null, or missing from the "
        "row); give it one, or declare a default under the suite's `vars:`"
    )


def test_json_null_is_an_error_unless_a_default_is_declared(tmp_path: Path) -> None:
    data = b'{"id": "a", "question": null}\n'
    assert "case 'a': variable 'question' has no value" in error_of(
        dataset_suite(tmp_path, "rows.jsonl", data)
    )
    suite = load_suite(dataset_suite(tmp_path, "rows.jsonl", data, "vars: {question: n/a}\n"))
    assert suite.cases[0].vars["question"] == "n/a"


def test_template_attribute_typo_names_the_case(tmp_path: Path) -> None:
    from evalgate.plan import plan_items

    text = GOOD.replace("{{ question }}", "{{ question.titel }}")
    suite = load_suite(write(tmp_path, text))
    with pytest.raises(SuiteError) as info:
        list(plan_items(suite))
    assert re.match(r"^s\.yaml:9: case 'c1': prompt\[0\]: .*titel", str(info.value))


def test_trim_of_the_question_itself_is_refused(tmp_path: Path) -> None:
    text = GOOD + "trim: {variable: question, query: question}\n"
    assert error_of(write(tmp_path, text)).startswith(
        "s.yaml:10: trim.query: expected a variable other than the trimmed one"
    )


def test_trimming_a_list_of_mappings_is_refused(tmp_path: Path) -> None:
    text = (
        variant(CONFIG, "  - {id: base, tier: small, context_trim: 0.5}")
        .replace("{{ question }}", "{{ context }} {{ question }}")
        .replace('{question: "hi"}', '{question: "hi", context: [{a: 1}]}')
    )
    assert "must be text or a list of texts; found a list" in error_of(write(tmp_path, text))
