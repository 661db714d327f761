"""``reports/evalgate.html``: one self-contained page rendered from stored results only.

The page is written by every run next to evalgate.json and by ``evalgate html`` from a
stored evalgate.json or a run directory, without calling any model. It makes no request
to any host: CSS, SVG plots and a little JavaScript are inline, and the case drill-down's
data is embedded as JSON and rendered lazily in the browser.

Every string from a run (model outputs, prompts, case ids, config names, grader reasons)
is untrusted: templates autoescape, the embedded JSON is escaped so it cannot close its
``<script>`` element, and the page's script only ever sets ``textContent``.

jinja2 is imported inside functions, so importing this module (or the plugin) stays cheap.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

HTML_NAME = "evalgate.html"
JSON_NAME = "evalgate.json"
_TEMPLATES = Path(__file__).with_name("templates")

# Characters that could end the <script> element or break a JS parser reading JSON.
_SCRIPT_SAFE = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


class ReportSourceError(Exception):
    """A report source (evalgate.json or run directory) cannot be read; one line."""


def embed_json(data: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``: no ``</script>``,
    no ``<!--``, no U+2028/U+2029 (escaped as JSON ``\\u`` sequences, same value)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).translate(
        _SCRIPT_SAFE
    )


def load_document(source: Path) -> dict[str, Any]:
    """The evalgate.json document of ``source``: the file itself, or a run directory.

    A run directory's own evalgate.json is used when the run got to write it; otherwise
    (a run killed before its end) the figures are rebuilt from its results.jsonl, without
    statistics, so the cases can still be reviewed.
    """
    if source.is_dir():
        stored = source / JSON_NAME
        if stored.is_file():
            return _read_json(stored)
        results = source / "results.jsonl"
        if not results.is_file():
            raise ReportSourceError(
                f"{source}: not a run directory (no {JSON_NAME} and no results.jsonl)"
            )
        return _document_from_results(source, results)
    return _read_json(source)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ReportSourceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ReportSourceError(f"{path}: not UTF-8 text (byte offset {exc.start})") from None
    try:
        document = json.loads(text)
    except RecursionError:
        raise ReportSourceError(f"{path}: not an evalgate report (nested too deeply)") from None
    except ValueError as exc:  # a truncated file, or a number too long to read
        raise ReportSourceError(f"{path}: not valid JSON: {' '.join(str(exc).split())}") from None
    problem = _not_a_report(document)
    if problem:
        raise ReportSourceError(f"{path}: not an evalgate report ({problem})")
    return document


def _not_a_report(document: Any) -> str | None:
    """What makes ``document`` something other than an evalgate.json, or None.

    Checks the shape every reader relies on (the text, Markdown and HTML reports, the
    policy export), so a foreign JSON file fails here in one line rather than rendering
    as an empty report with a passed gate.
    """
    if not isinstance(document, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
        return f"the JSON is {kind.get(type(document), 'a number')}, not an object"
    suites = document.get("suites")
    if not isinstance(suites, dict):
        return "no 'suites' section"
    for name, section in suites.items():
        if not isinstance(section, dict) or not isinstance(section.get("configs"), dict):
            return f"suites.{name}: no 'configs' section"
        for config_id, figures in section["configs"].items():
            if not isinstance(figures, dict):
                return f"suites.{name}.configs.{config_id}: not an object"
    gate = document.get("gate")
    if not isinstance(gate, dict):
        return "no 'gate' section"
    if not isinstance(gate.get("blocked"), bool):
        return "gate.blocked: expected true or false"
    return None


def _document_from_results(run_dir: Path, results: Path) -> dict[str, Any]:
    from evalgate.report.summary import build_report
    from evalgate.results import latest_by_item, read_results

    latest = latest_by_item(read_results(results))
    if not latest:
        raise ReportSourceError(f"{results}: no complete result line")
    document = build_report(latest.values(), run_id=run_dir.name, baselines={})
    document.setdefault("notes", []).append(
        "rebuilt from results.jsonl: the run ended before its report, so no statistics"
    )
    return document


def render_html(document: Mapping[str, Any]) -> str:
    """The page for one evalgate.json document."""
    import jinja2

    from evalgate.report.html_data import drilldown_json
    from evalgate.report.html_view import build_view

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    template = env.get_template("report.html.j2")
    script = (_TEMPLATES / "report.js").read_text(encoding="utf-8")
    css = (_TEMPLATES / "report.css").read_text(encoding="utf-8")
    # The page's own script is allowed by its hash: any script that slipped into the page
    # some other way would not run (defence in depth behind the escaping).
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    markup = jinja2.utils.markupsafe.Markup
    return template.render(
        view=build_view(document),
        data=markup(drilldown_json(document)),
        css=markup(css),
        js=markup(script),
        script_hash=f"sha256-{digest}",
    )


def write_html(document: Mapping[str, Any], path: Path) -> Path:
    """Renders and writes atomically (a reader never sees half a page); returns the path."""
    from evalgate.report.summary import write_text

    write_text(render_html(document), path)
    return path


def html_path_for(source: Path) -> Path:
    """Where ``evalgate html SOURCE`` writes by default: next to the evalgate.json."""
    return (source if source.is_dir() else source.parent) / HTML_NAME
