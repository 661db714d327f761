"""Bad suites fail collection with one readable line: file:line: key.path: message."""

from __future__ import annotations

import re

import pytest

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


def collection_error(pytester: pytest.Pytester, **files: str) -> list[str]:
    """The error lines pytest printed for the collection, and asserts no traceback."""
    result = pytester.runpytest_subprocess("--evalgate", "--collect-only", "-q")
    text = result.stdout.str()
    assert "Traceback" not in text and "raise " not in text, text
    return [line for line in result.outlines if re.match(r"^\S+\.(yaml|jsonl|csv):\d+: ", line)]


@pytest.mark.parametrize(
    ("replace", "with_", "expected"),
    [
        (
            "  - {id: base, tier: small}",
            "  - {id: base, tier: small, max_tokns: 5}",
            r"^bad\.yaml:7: configs\[0\]\.max_tokns: unknown key, expected one of .*; found "
            r"'max_tokns' \(did you mean 'max_tokens'\?\)$",
        ),
        (
            "configs:",
            "confgs:",
            r"^bad\.yaml:6: confgs: unknown key, .*\(did you mean 'configs'\?\)$",
        ),
        (
            "  - {id: base, tier: small}",
            "  - {id: base, tier: small, max_tokens: ten}",
            r"^bad\.yaml:7: configs\[0\]\.max_tokens: expected an integer, found a string "
            r"\('ten'\)$",
        ),
        (
            "  - {id: base, tier: small}",
            "  - {id: base, tier: smal}",
            r"^bad\.yaml:7: configs\[0\]\.tier: expected one of the tiers small, found 'smal' "
            r"\(did you mean 'small'\?\)$",
        ),
        (
            "  - {id: base, tier: small}",
            "  - {id: base, tier: small}\nbaseline: nope",
            r"^bad\.yaml:8: baseline: expected the id of a config \(base\), found 'nope'$",
        ),
        (
            "  - {id: base, tier: small}",
            "  - {id: base, tier: small}\n  - {id: base, tier: small, max_tokens: 5}",
            r"^bad\.yaml:8: id: duplicate config id 'base' \(first defined at bad\.yaml:7\)$",
        ),
        (
            '  - {id: c1, vars: {question: "hi"}}',
            '  - {id: c1, vars: {question: "hi"}}\n  - {id: c1, vars: {question: "yo"}}',
            r"^bad\.yaml:10: id: duplicate case id 'c1' \(first defined at bad\.yaml:9\)$",
        ),
        (
            '  - {id: c1, vars: {question: "hi"}}',
            '  - {id: c1, vars: {questoin: "hi"}}',
            r"^bad\.yaml:9: case 'c1': templates use undefined variable 'question'; the case "
            r"defines: questoin \(did you mean 'questoin'\?\)$",
        ),
        (
            "configs:",
            "assert:\n  - {type: contians, value: x}\nconfigs:",
            r"^bad\.yaml:7: assert\[0\]\.type: unknown grader 'contians'; known graders: .*"
            r"contains.*\(did you mean 'contains'\?\)$",
        ),
        (
            "configs:",
            "assert:\n  - {type: contains, valu: x}\nconfigs:",
            r"^bad\.yaml:7: assert\[0\]\.valu: unknown key, .*\(did you mean 'value'\?\)$",
        ),
        (
            "  - {id: base, tier: small}",
            "  - {id: base, tier: small, context_trim: 1.5}",
            r"^bad\.yaml:7: configs\[0\]\.context_trim: expected a number in \(0, 1\], found 1\.5$",
        ),
        (
            "cases:",
            "dataset: data/missing.jsonl\ncases:",
            r"^bad\.yaml:8: dataset: expected an existing JSONL or CSV file, found no file at "
            r".*missing\.jsonl$",
        ),
        (
            "  - {id: base, tier: small}",
            "  - {id: base, tier: small}\n  key: [unclosed",
            r"^bad\.yaml:\d+: invalid YAML: .*$",
        ),
    ],
    ids=[
        "misspelt-nested",
        "misspelt-top",
        "wrong-type",
        "unknown-tier",
        "baseline",
        "dup-config",
        "dup-case",
        "undefined-var",
        "unknown-grader",
        "grader-param",
        "trim-range",
        "missing-dataset",
        "yaml-syntax",
    ],
)
def test_bad_suite_is_one_located_line(
    pytester: pytest.Pytester, replace: str, with_: str, expected: str
) -> None:
    assert replace in GOOD
    pytester.makefile(".yaml", bad=GOOD.replace(replace, with_, 1))
    errors = collection_error(pytester)
    assert len(errors) == 1, errors
    assert re.match(expected, errors[0]), errors[0]


def test_dataset_row_errors_name_the_data_file_line(pytester: pytest.Pytester) -> None:
    pytester.mkdir("data")
    pytester.path.joinpath("data", "rows.jsonl").write_text(
        '{"id": "a", "question": "q1"}\n{"id": "b", "qestion": "q2"}\n'
    )
    pytester.makefile(
        ".yaml",
        bad=GOOD.replace(
            'cases:\n  - {id: c1, vars: {question: "hi"}}\n', "dataset: data/rows.jsonl\n"
        ),
    )
    errors = collection_error(pytester)
    assert errors == [
        "data/rows.jsonl:2: case 'b': templates use undefined variable 'question'; the case "
        "defines: qestion (did you mean 'qestion'?)"
    ]


def test_duplicate_ids_in_dataset(pytester: pytest.Pytester) -> None:
    pytester.mkdir("data")
    pytester.path.joinpath("data", "rows.csv").write_text("id,question\na,q1\nb,q2\na,q3\n")
    pytester.makefile(
        ".yaml",
        bad=GOOD.replace(
            'cases:\n  - {id: c1, vars: {question: "hi"}}\n', "dataset: {path: data/rows.csv}\n"
        ),
    )
    errors = collection_error(pytester)
    assert errors == [
        "data/rows.csv:4: id: duplicate case id 'a' (first defined at data/rows.csv:2)"
    ]


def test_other_suites_still_collect(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", bad=GOOD.replace("configs:", "confgs:"), good=GOOD)
    result = pytester.runpytest_subprocess("--evalgate", "--collect-only", "-q")
    assert "good.yaml::good::c1[base]" in result.outlines
    assert any(line.startswith("bad.yaml:6: confgs:") for line in result.outlines)
    assert result.ret != 0


def test_dataset_limit_and_csv(pytester: pytest.Pytester) -> None:
    pytester.mkdir("data")
    pytester.path.joinpath("data", "rows.csv").write_text(
        "id,question,group,must_pass\na,q1,g1,true\nb,q2,g1,false\nc,q3,g2,no\n"
    )
    pytester.makefile(
        ".yaml",
        s=GOOD.replace(
            'cases:\n  - {id: c1, vars: {question: "hi"}}\n',
            "dataset: {path: data/rows.csv, limit: 2}\n",
        ),
    )
    result = pytester.runpytest_subprocess("--evalgate", "--collect-only", "-q")
    assert [line for line in result.outlines if "::" in line] == [
        "s.yaml::good::a[base]",
        "s.yaml::good::b[base]",
    ]
