"""The ``evalgate`` command: work with stored reports outside a pytest run.

evalgate report [reports/evalgate.json]     print the tables, statistics and gate
evalgate summary [reports/evalgate.json]    print the Markdown summary (for CI)
evalgate html [reports/evalgate.json | RUN_DIR] [-o FILE]
                                            write the HTML report from stored results
evalgate export [reports/evalgate.json] -o policy.py   write the runtime policy
evalgate usage [--since 24h] [--feature F]  live usage by feature from the ledger
evalgate merge DIR... [-o reports/]         combine --evalgate-shard runs, report and gate

Exit status: 0 done; 1 `report` of a blocked gate, or `export` with nothing to export;
2 bad input or usage (one line on stderr: `evalgate: error: <path>: <what>`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

INPUT_ERROR = 2
"""Exit status of bad input or usage (argparse's own); 1 is kept for a blocked gate."""


class InputError(SystemExit):
    """Bad input: its one line is already on stderr; the exit status is 2.

    ``str()`` is the message, so in-process callers (and tests) can read it.
    """

    def __init__(self, message: str) -> None:
        super().__init__(INPUT_ERROR)
        self.message = message

    def __str__(self) -> str:
        return self.message


def _fail(message: str) -> NoReturn:
    text = " ".join(message.split())  # one line, whatever the message held
    print(f"evalgate: error: {text}", file=sys.stderr)
    raise InputError(text)


def _load(path: Path) -> dict:
    """The evalgate.json document at ``path`` (or of a run directory), validated by the
    loader the HTML report uses; anything else is one line and exit status 2."""
    from evalgate.report.html import ReportSourceError, load_document

    try:
        return load_document(path)
    except ReportSourceError as exc:
        _fail(str(exc))


def _unreadable(path: Path, exc: Exception) -> NoReturn:
    # A document that passed the loader's shape check but lacks a field a renderer needs
    # (an older or hand-edited report): still one line, never a traceback.
    what = " ".join(str(exc).split())[:200]
    _fail(f"{path}: not an evalgate report this version can read ({type(exc).__name__}: {what})")


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
    _add_export(commands)
    _add_usage(commands)
    _add_merge(commands)
    args = parser.parse_args(argv)
    if args.command == "merge":
        return _merge(args)
    if args.command == "html":
        return _html(args)
    if args.command == "export":
        return _export(args)
    if args.command == "usage":
        return _usage(args)
    document = _load(args.path)
    if args.command == "report":
        from evalgate.report.summary import format_tables

        try:
            text = "\n".join(format_tables(document))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            _unreadable(args.path, exc)
        print(text)
        return 1 if document.get("gate", {}).get("blocked") else 0
    from evalgate.report.markdown import render_summary

    try:
        text = render_summary(document)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        _unreadable(args.path, exc)
    sys.stdout.write(text)
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
        _fail(str(exc))
    target = args.output or html_path_for(args.path)
    try:
        write_html(document, target)
    except OSError as exc:
        _fail(f"{target}: cannot write: {exc.strerror or exc}")
    print(f"report: {target}")
    return 0


def _add_export(commands: Any) -> None:
    sub = commands.add_parser(
        "export",
        help="write the runtime policy module from a report's recommended configs",
        description="Writes (or updates, keeping its other features) a runtime policy "
        "module: per feature, the recommended config of its suite, or --config.",
    )
    sub.add_argument("path", nargs="?", type=Path, default=Path("reports/evalgate.json"))
    sub.add_argument("-o", "--output", type=Path, required=True, help="the policy module")
    sub.add_argument("--suite", help="export only this suite")
    sub.add_argument("--config", help="export this config instead of the recommendation")
    sub.add_argument(
        "--fallback",
        action="append",
        dest="fallbacks",
        metavar="CONFIG",
        help="a config tried on an error or timeout, in order (repeatable; "
        "default: the baseline when another model serves it)",
    )
    sub.add_argument(
        "--cache",
        choices=("auto", "exact", "off"),
        default="auto",
        help="exact cache per tenant: auto (when the config measured the cache or runs "
        "at temperature 0), exact, or off (default: %(default)s)",
    )
    sub.add_argument(
        "--cache-ttl", type=float, default=86400.0, metavar="S", help="entry lifetime, seconds"
    )
    sub.add_argument(
        "--match",
        type=Path,
        metavar="SUITE_YAML",
        help="refuse unless the report was made from this suite file (by default each "
        "suite file recorded in the report is checked where it exists)",
    )
    sub.add_argument(
        "--limits",
        type=Path,
        metavar="JSON",
        help="per-user limits: a JSON file holding the policy's `limits` section "
        "(default: keep the existing policy's, or leave limits to code)",
    )


def _export(args: argparse.Namespace) -> int:
    from evalgate.policy.export import ExportError, export_policy
    from evalgate.runtime.errors import PolicyError

    document = _load(args.path)  # the report loader's checks, and its one-line errors
    try:
        exported, skipped = export_policy(
            document,
            args.output,
            suite=args.suite,
            config=args.config,
            fallbacks=args.fallbacks,
            cache=args.cache,
            cache_ttl_s=args.cache_ttl,
            match=args.match,
            limits=args.limits,
        )
    except (ExportError, PolicyError) as exc:
        _fail(str(exc))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        _unreadable(args.path, exc)
    for line in skipped:
        print(f"evalgate export: {line}")
    if not exported:
        print("evalgate export: nothing to export")
        return 1
    print(f"evalgate export: wrote {args.output} ({', '.join(exported)})")
    return 0


def _add_usage(commands: Any) -> None:
    sub = commands.add_parser(
        "usage",
        help="live cost, latency and cache figures by feature, from the usage ledger",
        description="Per feature: calls, cost, tokens, p50/p95 latency and TTFT, cache hit "
        "rate, fallbacks, errors and top users by cost; beside each, what the policy's "
        "evidence predicted, flagging drift.",
    )
    sub.add_argument(
        "--backend",
        default=None,
        metavar="URL",
        help="the ledger's backend (default: $EVALGATE_RUNTIME_BACKEND or "
        "sqlite:///.evalgate/runtime.sqlite3)",
    )
    sub.add_argument("--policy", type=Path, help="the policy module, for predicted figures")
    sub.add_argument("--since", default="24h", help="window: 30m, 24h, 7d, or 'all'")
    sub.add_argument("--feature", help="only this feature")
    sub.add_argument("--format", choices=("table", "json"), default="table")
    sub.add_argument(
        "--tolerance",
        type=float,
        default=0.2,
        help="flag drift above the prediction by more than this share (default: %(default)s)",
    )
    sub.add_argument("--prefix", default="evalgate:", help=argparse.SUPPRESS)


def _usage(args: argparse.Namespace) -> int:
    from evalgate.runtime.usage import UsageError, usage_main

    if not args.tolerance >= 0:
        _fail(f"--tolerance {args.tolerance}: must be a number >= 0")
    try:
        sys.stdout.write(usage_main(args))
    except UsageError as exc:
        _fail(str(exc))
    return 0


def _add_merge(commands: Any) -> None:
    from evalgate import options

    sub = commands.add_parser(
        "merge",
        help="combine the shards of a CI matrix into one report and gate verdict",
        description="Each DIR is the reports directory (or run directory) of a "
        "`pytest --evalgate --evalgate-shard K/N` run. Writes one run with its "
        "evalgate.json, summary.md and HTML report under -o, and gates it: exit 1 when "
        "the gate blocks, as the pytest run would.",
    )
    sub.add_argument("dirs", nargs="+", type=Path, metavar="DIR")
    sub.add_argument("-o", "--output", type=Path, default=Path("reports"), help="reports dir")
    sub.add_argument(
        "--allow-partial", action="store_true", help="merge even when some shards are missing"
    )
    sub.add_argument(
        "--rootdir",
        type=Path,
        default=Path("."),
        help="where the suite paths recorded by the shards are found (default: .)",
    )
    sub.add_argument("--gate", choices=options.GATE_CHOICES, default="marked")
    sub.add_argument("--margin", type=float, default=None)
    sub.add_argument("--alpha", type=float, default=None)
    sub.add_argument("--allow-inconclusive", action="store_true")
    sub.add_argument("--force-gate", action="store_true")
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="JSON",
        help="a stored evalgate.json (e.g. of main) to compare the merged run against",
    )


def _merge(args: argparse.Namespace) -> int:
    """Merges shards; the gate options mean what the pytest run's ``--evalgate-*`` do."""
    from evalgate.merge import MergeError, merge_shards
    from evalgate.report.gate import GateSettings

    if args.margin is not None and not 0 < args.margin < 1:
        _fail(f"--margin must be in (0, 1), got {args.margin}")
    if args.alpha is not None and not 0 < args.alpha <= 0.5:
        _fail(f"--alpha must be in (0, 0.5], got {args.alpha}")
    settings = GateSettings(
        margin=args.margin,
        alpha=args.alpha,
        mode=args.gate,
        allow_inconclusive=args.allow_inconclusive,
        force=args.force_gate,
        seed=args.seed,
    )
    stored = None
    if args.baseline is not None:
        from evalgate.report.gate import check_stored_baseline

        try:
            stored = check_stored_baseline(json.loads(args.baseline.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            _fail(f"--baseline {args.baseline}: {exc}")
    from evalgate.report.stored import ResultsChanged

    try:
        paths, written, shards = merge_shards(
            args.dirs,
            args.output,
            settings,
            rootdir=args.rootdir,
            allow_partial=args.allow_partial,
            stored_baseline=stored,
        )
    except MergeError as exc:
        _fail(str(exc))
    except ResultsChanged as exc:  # the merged results.jsonl rewritten under the report
        _fail(f"report not written: {exc}")
    except OSError as exc:
        _fail(f"{getattr(exc, 'filename', None) or args.output}: {exc.strerror or exc}")
    from evalgate.report.summary import format_tables

    shown = ", ".join(f"{s.index}/{s.count}" for s in shards)
    print(f"evalgate merge: {len(shards)} shard(s) ({shown}) -> {paths.run_dir}")
    if written.ignored_note:
        print(written.ignored_note)
    if written.document is None:
        print("evalgate merge: the shards hold no results of the current suites")
        return 1
    for line in format_tables(written.document):
        print(line)
    if written.html_error:
        print(f"html report not written: {written.html_error}")
    print(f"report: {paths.report_json}")
    return 1 if written.blocked else 0


if __name__ == "__main__":
    raise SystemExit(main())
