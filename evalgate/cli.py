"""The ``evalgate`` command: work with stored reports outside a pytest run.

evalgate report [reports/evalgate.json]     print the tables, statistics and gate
evalgate summary [reports/evalgate.json]    print the Markdown summary (for CI)
evalgate html [reports/evalgate.json | RUN_DIR] [-o FILE]
                                            write the HTML report from stored results
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _load(path: Path) -> dict:
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"evalgate: cannot read {path}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="evalgate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("report", "print the tables, statistics and gate of a report"),
        ("summary", "print the Markdown summary of a report"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("path", nargs="?", type=Path, default=Path("reports/evalgate.json"))
    _add_html(commands)
    args = parser.parse_args(argv)
    if args.command == "html":
        return _html(args)
    document = _load(args.path)
    if args.command == "report":
        from evalgate.report.summary import format_tables

        print("\n".join(format_tables(document)))
        return 1 if document.get("gate", {}).get("blocked") else 0
    from evalgate.report.markdown import render_summary

    sys.stdout.write(render_summary(document))
    return 0


def _add_html(commands: Any) -> None:
    sub = commands.add_parser(
        "html", help="write the HTML report from a stored evalgate.json or run directory"
    )
    sub.add_argument("path", nargs="?", type=Path, default=Path("reports/evalgate.json"))
    sub.add_argument(
        "-o", "--output", type=Path, help="where to write (default: evalgate.html beside it)"
    )


def _html(args: argparse.Namespace) -> int:
    """Re-renders the page from stored results only: no model is called."""
    from evalgate.report.html import ReportSourceError, html_path_for, load_document, write_html

    try:
        document = load_document(args.path)
    except ReportSourceError as exc:
        raise SystemExit(f"evalgate: {exc}") from None
    target = args.output or html_path_for(args.path)
    try:
        write_html(document, target)
    except OSError as exc:
        raise SystemExit(f"evalgate: cannot write {target}: {exc}") from None
    print(f"report: {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
