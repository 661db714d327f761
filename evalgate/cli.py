"""The ``evalgate`` command: work with stored reports outside a pytest run.

evalgate report [reports/evalgate.json]     print the tables, statistics and gate
evalgate summary [reports/evalgate.json]    print the Markdown summary (for CI)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


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
    args = parser.parse_args(argv)
    document = _load(args.path)
    if args.command == "report":
        from evalgate.report.summary import format_tables

        print("\n".join(format_tables(document)))
        return 1 if document.get("gate", {}).get("blocked") else 0
    from evalgate.report.markdown import render_summary

    sys.stdout.write(render_summary(document))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
