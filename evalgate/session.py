"""One evalgate pytest session: run identity, local servers, engine, report.

Registered as a plugin only when ``--evalgate`` is given. Side effects that belong to the
whole run (starting local model servers, writing reports) happen on the controller only;
every process (controller without xdist, or each worker) runs its own engine.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from evalgate import options
from evalgate.nodeid import is_eval_nodeid, parse_nodeid, resolve_label
from evalgate.runs import RunPaths, latest_run_id, mark_latest, new_run_id
from evalgate.scheduling import shard_of
from evalgate.shard import Shard, parse_shard

if TYPE_CHECKING:
    from evalgate.collect import EvalItem
    from evalgate.engine.limits import RateLimit
    from evalgate.engine.servers import LocalServers
    from evalgate.plan import ItemPlan
    from evalgate.results import CaseResult
    from evalgate.runner import Runner
    from evalgate.suite.model import Suite

SESSION_KEY = pytest.StashKey["EvalgateSession"]()
PROGRESS_EVERY_S = 30.0


def _minutes(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def session_of(config: pytest.Config) -> EvalgateSession:
    return config.stash[SESSION_KEY]


class EvalgateSession:
    """Per-process state of an evalgate run (hooks are methods of this plugin object)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.worker_id: str | None = None
        workerinput = getattr(config, "workerinput", None)
        reports = Path(config.getoption(options.REPORTS)).resolve()
        if workerinput is not None:
            self.worker_id = str(workerinput["workerid"])
            self.worker_count = int(workerinput["workercount"])
            run_id = str(workerinput["evalgate_run_id"])
            reports = Path(workerinput["evalgate_reports"])
        elif config.getoption(options.RESUME):
            run_id = latest_run_id(reports) or ""
            if not run_id:
                raise pytest.UsageError(f"--evalgate-resume: no earlier run under {reports}/runs")
        else:
            run_id = new_run_id()
        self.paths = RunPaths(reports, run_id)
        self.resuming = bool(config.getoption(options.RESUME))
        self.shard = shard_option(config)
        self._runner: Runner | None = None
        self._items: list[EvalItem] = []
        self._prefetched_shards: set[int] = set()
        self._prefetched_all = False
        self.suites: dict[str, Suite] = {}  # controller: suite name -> Suite, for the report
        self._servers: LocalServers | None = None
        self._progress_total = 0
        self._progress_done = 0
        self._progress_stamp = self._progress_started = time.monotonic()
        self._pace_started = self._progress_started
        self.report: dict[str, Any] | None = None
        self.ignored_note: str | None = None  # stored results the report left out, and why
        self.export_lines: list[str] = []
        self.blocked = False
        self.html_error: str | None = None
        self.report_error: str | None = None
        if self.is_controller and not config.option.collectonly:
            mark_latest(self.paths)
            self.paths.servers.unlink(missing_ok=True)  # stale ports from an earlier session

    # -- roles ---------------------------------------------------------------------------

    @property
    def is_worker(self) -> bool:
        return self.worker_id is not None

    @property
    def is_controller(self) -> bool:
        return not self.is_worker

    def _uses_xdist(self) -> bool:
        return self.config.pluginmanager.has_plugin("dsession")

    # -- xdist plumbing ------------------------------------------------------------------

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["evalgate_run_id"] = self.paths.run_id
        node.workerinput["evalgate_reports"] = str(self.paths.reports)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        if config.getoption("dist", "load") == "each":
            return None
        from evalgate.scheduling import make_scheduler

        return make_scheduler(config, log)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: Sequence[str]) -> None:
        eval_ids = [i for i in ids if is_eval_nodeid(i)]
        self._progress_total = len(eval_ids)
        if self.config.option.collectonly or self.suites:
            return
        self._load_suites_for(eval_ids)
        self._record_shard()
        if self.resuming:
            from evalgate.plan import plan_items

            wanted = {(p.suite, f"{p.case}[{p.label}]") for p in map(parse_nodeid, eval_ids) if p}
            self._announce_resume(
                plan
                for suite in self.suites.values()
                for plan in plan_items(suite)
                if (suite.name, plan.name) in wanted
            )
        from evalgate.runner import grader_models

        models = self._local_models_for_ids(eval_ids)
        for suite in self.suites.values():
            models |= _local_names(grader_models(suite))
        self._start_servers(models)

    # -- collection ----------------------------------------------------------------------

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        from evalgate.collect import EvalItem

        self._items = [i for i in session.items if isinstance(i, EvalItem)]
        if self.is_worker or self._uses_xdist():
            return
        self._progress_total = len(self._items)
        for item in self._items:
            self.suites.setdefault(item.plan.suite.name, item.plan.suite)
        if not self.config.option.collectonly:
            self._record_shard()
        if self.resuming and not self.config.option.collectonly:
            self._announce_resume(item.plan for item in self._items)
        if not self.config.option.collectonly and self._items:
            from evalgate.runner import grader_models

            models = {i.plan.model for i in self._items}
            for suite in self.suites.values():
                models |= grader_models(suite)
            self._start_servers(_local_names(models))

    def _record_shard(self) -> dict[str, Any]:
        """Writes (again) this shard's ``shard.json``; {} when the run is not sharded.

        Written when the suites are known, so a shard killed mid-run still says what it
        was, and at the end (a shard that collected no item still records its empty part).
        """
        if self.shard is None:
            return {}
        from evalgate.shard import read_shard_record, shard_record, write_shard_record

        record = shard_record(self.shard, self.suites.values(), self.config.rootpath)
        stored = read_shard_record(self.paths.run_dir) if self.resuming else None
        if stored is not None and stored.get("shard") != record["shard"]:
            index, count = stored["shard"]
            raise pytest.UsageError(
                f"--evalgate-resume: run {self.paths.run_id} was shard {index}/{count}, "
                f"not {self.shard}; resume it with --evalgate-shard {index}/{count}"
            )
        if stored is not None:
            # A resumed shard keeps the suites it already recorded beside the current ones.
            record["suites"] = {**stored.get("suites", {}), **record["suites"]}
        write_shard_record(self.paths.run_dir, record)
        return record

    def _announce_resume(self, plans: Iterable[ItemPlan]) -> None:
        """One line: what the resumed run reuses, regrades and calls again, and why."""
        from evalgate.results import latest_by_item, read_results
        from evalgate.resume import summary_line

        line = summary_line(plans, latest_by_item(read_results(self.paths.results)))
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None:
            terminal.write_line(line)

    def _load_suites_for(self, nodeids: Iterable[str]) -> None:
        from evalgate.suite.loader import load_suite

        rootpath = self.config.rootpath
        parsed = (parse_nodeid(n) for n in nodeids)
        for path in sorted({p.path for p in parsed if p is not None}):
            suite = load_suite(rootpath / path)
            self.suites[suite.name] = suite

    def _local_models_for_ids(self, nodeids: Iterable[str]) -> set[str]:
        models: set[str] = set()
        for nodeid in nodeids:
            parsed = parse_nodeid(nodeid)
            suite = self.suites.get(parsed.suite) if parsed is not None else None
            if parsed is None or suite is None:
                continue
            found = resolve_label(suite.configs, parsed.label)
            if found is not None:
                models.add(suite.tier_of(found[0]).model)
        return _local_names(models)

    def _start_servers(self, names: set[str]) -> None:
        if not names:
            return
        from evalgate.engine.servers import LocalServers

        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None:
            terminal.write_line(
                f"evalgate: starting local model server(s): {', '.join(sorted(names))}"
            )
        self._servers = LocalServers(
            self.paths.run_dir, threads=_server_threads(), parallel=_local_concurrency()
        )
        try:
            running = self._servers.ensure(sorted(names))
        except Exception as exc:  # MissingModelError, LocalServerError: one clear line
            raise pytest.UsageError(str(exc)) from None
        servers = {
            name: {"url": server.base_url, "pid": server.pid, "batch_url": server.batch_url}
            for name, server in running.items()
        }
        tmp = self.paths.servers.with_suffix(".tmp")
        tmp.write_text(json.dumps(servers))
        os.replace(tmp, self.paths.servers)

    # -- running -------------------------------------------------------------------------

    def runner(self, session: pytest.Session | None = None) -> Runner:
        """This process's runner (made on first use); it stops submitting once ``session``
        is stopping (``-x``, ``--maxfail``)."""
        if self._runner is None:
            from evalgate.engine.batch import BatchSettings
            from evalgate.engine.cache import ResponseCache
            from evalgate.engine.engine import Engine
            from evalgate.engine.retry import RetryPolicy
            from evalgate.paths import cache_dir
            from evalgate.results import latest_by_item, read_results
            from evalgate.runner import Endpoints, Runner

            cache = None
            if not self.config.getoption(options.NO_CACHE):
                directory = self.config.getoption(options.CACHE_DIR)
                base = Path(directory) if directory else cache_dir()
                cache = ResponseCache(base / "responses.sqlite3")
            endpoints = Endpoints(self.paths.servers)
            engine = Engine(
                endpoints,
                concurrency=self.config.getoption(options.CONCURRENCY),
                cache=cache,
                retry=RetryPolicy(max_attempts=self.config.getoption(options.MAX_ATTEMPTS)),
                limits=self._tier_limits(),
                limits_dir=self.paths.run_dir / "limits",
                local_concurrency=_local_concurrency(),
                batch_dir=self.paths.run_dir / "batches",
                batch_settings=BatchSettings.from_env(),
            )
            done = latest_by_item(read_results(self.paths.results)) if self.resuming else {}
            self._runner = Runner(
                self.paths,
                engine,
                worker=self.worker_id or "main",
                done=done,
                should_stop=lambda: bool(session and (session.shouldstop or session.shouldfail)),
            )
        return self._runner

    def _tier_limits(self) -> dict[str, RateLimit]:
        """Each tier's rpm/tpm, keyed by model and endpoint (the provider's unit).

        Tiers naming the same model at the same endpoint, in one suite or several, share
        one budget, the tightest of theirs; the engine keys calls the same way.
        """
        from evalgate.engine.limits import RateLimit, limit_key

        limits: dict[str, RateLimit] = {}
        for suite in {id(i.plan.suite): i.plan.suite for i in self._items}.values():
            for tier in suite.tiers.values():
                key = limit_key(tier.model, tier.api_base)
                limit = RateLimit(tier.rpm, tier.tpm)
                limits[key] = limits[key].tighter(limit) if key in limits else limit
        return limits

    def run_item(self, item: EvalItem) -> tuple[CaseResult, bool]:
        runner = self.runner(item.session)
        # The runner keeps a bounded window of these submitted ahead of pytest.
        if self.is_worker:
            shard = shard_of(item.nodeid, self.worker_count)
            if shard not in self._prefetched_shards:
                self._prefetched_shards.add(shard)
                runner.prefetch(
                    i.plan for i in self._items if shard_of(i.nodeid, self.worker_count) == shard
                )
        elif not self._prefetched_all:
            self._prefetched_all = True
            runner.prefetch(i.plan for i in self._items)
        return runner.result_for(item.plan)

    # -- progress and the end of the run -------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.is_worker or report.when != "call" or not is_eval_nodeid(report.nodeid):
            return
        self._progress_done += 1
        now = time.monotonic()
        if self._progress_done == 1:
            # The pace counts from the first item's start, not from start-up (servers,
            # model loading), which would inflate every estimate.
            self._pace_started = now - report.duration
        if now - self._progress_stamp >= PROGRESS_EVERY_S and self._progress_total:
            self._progress_stamp = now
            terminal = self.config.pluginmanager.get_plugin("terminalreporter")
            if terminal is not None and self.config.getoption("verbose") >= 0:
                terminal.write_line(self._progress_line(now))

    def _progress_line(self, now: float) -> str:
        done, total = self._progress_done, self._progress_total
        elapsed = now - self._progress_started
        line = f"evalgate: {done}/{total} items done, {_minutes(elapsed)} elapsed"
        # A resumed run's reused items finish at once and would make any pace meaningless.
        if 0 < done < total and not self.resuming:
            pace = (now - self._pace_started) / done
            line += f", about {_minutes(pace * (total - done))} left at this pace"
        return line

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner.engine.close()
            self._runner = None
        if self.is_worker:
            return
        self._stop_servers()
        if self.config.option.collectonly:
            return
        if self.shard is not None and session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
            # A shard may hold no case of a small suite: an empty part, not a failure.
            self._record_shard()
            session.exitstatus = pytest.ExitCode.OK
        self.report = self._write_report()
        if self.report is not None and self.config.getoption(options.EXPORT):
            self.export_lines = self._export(self.report)
        if self.blocked and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _write_report(self) -> dict[str, Any] | None:
        from evalgate.report.write import write_run_report

        baseline, baseline_error = None, None
        try:
            baseline = self._stored_baseline()
        except pytest.UsageError as exc:
            baseline_error = str(exc)
        shard_note = None
        if self.shard is not None:
            from evalgate.shard import shard_note as note_for

            shard_note = note_for(self._record_shard())
        from evalgate.report.stored import ResultsChanged

        try:
            written = write_run_report(
                self.paths,
                self.suites,
                self._gate_settings(),
                stored_baseline=baseline,
                baseline_error=baseline_error,
                shard_note=shard_note,
                extra_document={"shard": {"index": self.shard.index, "count": self.shard.count}}
                if self.shard is not None
                else None,
            )
        except ResultsChanged as exc:
            # results.jsonl kept being rewritten under the report: the results are on
            # disk, the verdict is not known, so the run does not pass.
            self.report_error = f"evalgate: report not written: {exc}"
            self.blocked = True
            return None
        self.ignored_note = written.ignored_note
        self.blocked = written.blocked
        self.html_error = written.html_error
        return written.document

    def _export(self, document: dict[str, Any]) -> list[str]:
        """Writes the runtime policy; returns what to tell the user (one line each)."""
        from evalgate.policy.export import ExportError, export_policy
        from evalgate.runtime.errors import PolicyError

        out = Path(self.config.getoption(options.EXPORT))
        try:
            # The suites are the ones just run: their hashes match by construction.
            exported, skipped = export_policy(document, out, check_suites=False)
        except (ExportError, PolicyError) as exc:
            return [f"evalgate export: {exc}"]
        lines = [f"evalgate export: {line}" for line in skipped]
        if exported:
            lines.append(f"evalgate export: wrote {out} ({', '.join(exported)})")
        return lines

    def _gate_settings(self) -> Any:
        from evalgate.report.gate import GateSettings

        option = self.config.getoption
        return GateSettings(
            margin=option(options.MARGIN),
            alpha=option(options.ALPHA),
            mode=option(options.GATE),
            allow_inconclusive=option(options.ALLOW_INCONCLUSIVE),
            force=option(options.FORCE_GATE),
            seed=option(options.SEED),
        )

    def _stored_baseline(self) -> dict[str, Any] | None:
        path = self.config.getoption(options.BASELINE)
        if not path:
            return None
        from evalgate.report.gate import check_stored_baseline

        try:
            with open(path, encoding="utf-8") as fh:
                document = json.load(fh)
        except (OSError, ValueError) as exc:
            raise pytest.UsageError(f"--evalgate-baseline {path}: cannot read: {exc}") from None
        try:
            return check_stored_baseline(document)
        except ValueError as exc:
            raise pytest.UsageError(f"--evalgate-baseline {path}: {exc}") from None

    def _stop_servers(self) -> None:
        if self._servers is not None:
            self._servers.stop_all()
            self._servers = None

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self._stop_servers()  # also after an internal error or Ctrl-C during collection

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker:
            return
        if self.ignored_note:
            terminalreporter.write_line(self.ignored_note)
        if self.report_error:
            terminalreporter.write_line(self.report_error)
        if self.report is None:
            return
        from evalgate.report.summary import format_tables

        terminalreporter.section("evalgate")
        for line in format_tables(self.report):
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"results: {self.paths.results}")
        if self.html_error:
            terminalreporter.write_line(f"html report not written: {self.html_error}")
        else:
            from evalgate.report.html import html_path_for

            terminalreporter.write_line(f"html report: {html_path_for(self.paths.report_json)}")
        terminalreporter.write_line(f"report: {self.paths.report_json}")
        for line in self.export_lines:
            terminalreporter.write_line(line)


def shard_option(config: pytest.Config) -> Shard | None:
    """The run's ``--evalgate-shard K/N`` (validated in ``pytest_configure``)."""
    text = config.getoption(options.SHARD)
    return parse_shard(text) if text else None


def _local_names(models: Iterable[str]) -> set[str]:
    from evalgate.suite.model import LOCAL_PREFIX

    return {m[len(LOCAL_PREFIX) :] for m in models if m.startswith(LOCAL_PREFIX)}


def _server_threads() -> int:
    """Threads per local model server (default: every core; calls are capped instead)."""
    return max(1, int(os.environ.get("EVALGATE_LOCAL_THREADS", str(os.cpu_count() or 2))))


def _local_concurrency() -> int:
    """Local model calls in flight (all local servers together): default 1.

    Local models are CPU-bound and each server uses every core; two calls at once on two
    servers make their spinning threads fight for the cores. Measured on 2 cores: the demo
    suites' per-call p50 rose 3-7x at 2 in flight over one at a time.
    """
    return max(1, int(os.environ.get("EVALGATE_LOCAL_CONCURRENCY", "1")))
