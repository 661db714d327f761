"""The one wire and storage format for results.

A :class:`CaseResult` is one finished item: one call of one case under one config
(and one repeat), with its grades. Workers append it to the run's ``results.jsonl`` the
moment it finishes; the controller reads the same lines back to build every report. No
other shape of result travels between modules.

Only builtin-typed, JSON-safe data lives here, so a line can be written by any process
and read by any other. A line never carries secrets: API keys are never part of a call's
recorded parameters, and every error message and grader reason is passed through
:func:`evalgate.redact.redact` when a result is made (so before it is written, reported
or shown).

Durability: each line goes to the file in one ``write`` as soon as its item finishes, so
a killed process (SIGKILL, a crash, Ctrl-C) loses at most the line being written, which
readers skip and the next writer seals off. The file is fsynced at most once a second
while results arrive (:data:`FSYNC_EVERY_S`) and when the run closes it, so a power cut
or kernel crash loses at most the results of the last second or so; they run again on
``--evalgate-resume``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from evalgate.redact import redact

FORMAT_VERSION = 1
FSYNC_EVERY_S = 1.0


class ItemKey(NamedTuple):
    """An item's identity: fields, never a parsed string, so no two items share one."""

    suite: str
    case: str
    config: str
    repeat: int


@dataclass(frozen=True, slots=True)
class CallResult:
    """What one model call produced and what it cost.

    Attributes:
        output: the generated text ("" when the call failed).
        input_tokens: prompt tokens reported by the provider (None if unknown).
        output_tokens: completion tokens reported by the provider (None if unknown).
        cost_usd: what this call cost now; 0.0 for a cache hit; None if no price is known.
        saved_usd: the cost a cache hit avoided (the original call's cost), else 0.0.
        latency_ms: wall time of the real model call; for a cache hit, the original
            call's latency, so latency statistics describe the model, not the cache.
        ttft_ms: time to the first content token of the real call (None without streaming).
        cached: True when the result came from the response cache.
        hit_latency_ms: measured wall time of serving a cache hit (None for a real call).
        attempts: number of attempts made (1 when the first attempt succeeded).
        error: the final error after retries, as "Type: message"; None on success.
        finish_reason: the provider's finish reason ("stop", "length", ...).
    """

    output: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    saved_usd: float = 0.0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    cached: bool = False
    hit_latency_ms: float | None = None
    attempts: int = 1
    error: str | None = None
    finish_reason: str | None = None

    def __post_init__(self) -> None:
        # Credentials never travel in a result (see evalgate.redact), however it was made.
        if self.error:
            object.__setattr__(self, "error", redact(self.error))

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class GradeResult:
    """One grader's verdict on one output.

    Attributes:
        grader: the grader's name as written in the suite (``contains``, ``not-regex``...).
        score: in [0, 1].
        passed: whether the score reaches the grader's own pass mark.
        reason: one line a human can read ("expected '391' in output, found '381'").
        weight: the grader's weight in the case's weighted mean.
        error: set when the grader itself could not run (bad user code, judge failure);
            such a grade counts as score 0 and makes the item fail.
        cost_usd, latency_ms, calls: what the grader's own model calls (an LLM judge)
            cost; reported as grading cost, never added to the config's cost. ``cost_usd``
            is None when a call's price is unknown (also for a cache hit of an unpriced
            judge).
        flags: marks for a reviewer; ``"addresses-grader"``: a judge-graded pass whose
            output talks to its grader (rubric, score, grader, evaluator).
        saved_usd: what the response cache saved on the grader's own model calls.
    """

    grader: str
    score: float
    passed: bool
    reason: str
    weight: float = 1.0
    error: str | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    calls: int = 0
    flags: tuple[str, ...] = ()
    saved_usd: float = 0.0

    def __post_init__(self) -> None:
        # JSON brings the flags back as a list; keep the value object immutable.
        if not isinstance(self.flags, tuple):
            object.__setattr__(self, "flags", tuple(self.flags))
        # A grader's error is often str(exc) of a failed call: credentials never travel.
        object.__setattr__(self, "reason", redact(self.reason))
        if self.error:
            object.__setattr__(self, "error", redact(self.error))


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One finished item: one line of ``results.jsonl``.

    Attributes:
        item_key: the item's label, ``suite::case[config]`` (``[config-rN]`` when the
            config has several repeats), as pytest shows it; for people. Results are
            matched by :attr:`key` (suite, case_id, config_id, repeat), never by this text.
        run_id: the run that produced this line.
        suite: suite name.  feature: the suite's feature tag.
        suite_hash: hash of the suite definition (config + cases) the line was made with.
        case_id, config_id, repeat: what was run (repeat is 0-based).
        group: the case's cluster for resampling (None when the case has none).
        tier, model: the config's tier name and its litellm model string.
        must_pass: whether the case was marked must-pass.
        call: the call's result.
        grades: each grader's verdict.
        score: weighted mean of the grades, in [0, 1] (0 when the call failed).
        passed: score >= the suite's pass threshold and the call succeeded.
        expected: a short human-readable statement of what was expected, for failures.
        worker: "main" or the xdist worker id that ran it.
        finished_at: unix time the result was recorded.
        request_hash: digest of the call as sent (model, messages, parameters); a resumed
            run calls again when the current item's differs. "" in older lines.
        grading_hash: the case's grading hash (graders, the files and code they read,
            threshold); a resumed run regrades the stored output when it differs.
    """

    item_key: str
    run_id: str
    suite: str
    feature: str
    suite_hash: str
    case_id: str
    config_id: str
    repeat: int
    group: str | None
    tier: str
    model: str
    must_pass: bool
    call: CallResult
    grades: tuple[GradeResult, ...] = ()
    score: float = 0.0
    passed: bool = False
    expected: str = ""
    worker: str = "main"
    finished_at: float = 0.0
    version: int = FORMAT_VERSION
    request_hash: str = ""
    grading_hash: str = ""

    @property
    def key(self) -> ItemKey:
        return ItemKey(self.suite, self.case_id, self.config_id, self.repeat)

    @property
    def errored(self) -> bool:
        """True when the call (or a grader) failed, so the quality score is not data."""
        return self.call.error is not None or any(g.error for g in self.grades)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False, separators=(",", ":"))

    def to_line(self) -> bytes:
        """One UTF-8 line; text that UTF-8 cannot hold (a lone surrogate in a model's
        output) is written as a JSON escape, so the result is kept, not lost."""
        try:
            return (self.to_json() + "\n").encode("utf-8")
        except UnicodeEncodeError:
            data = dataclasses.asdict(self)
            return (json.dumps(data, ensure_ascii=True, separators=(",", ":")) + "\n").encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseResult:
        data = dict(data)
        data["call"] = CallResult(**data["call"])
        data["grades"] = tuple(GradeResult(**g) for g in data.get("grades", ()))
        return cls(**data)


@dataclass(slots=True)
class ResultsWriter:
    """Appends results to a JSONL file, one ``write`` per line.

    Several processes (xdist workers) may append to the same file: the file is opened
    with O_APPEND and each line goes out in a single ``os.write`` under an exclusive
    ``flock``, so lines never interleave. A line torn by a process killed mid-write is
    sealed with a newline before the next line is appended, so it never swallows the
    next result. See the module docstring for what a power cut can lose.
    """

    path: Path
    _fd: int = field(default=-1, init=False)
    _synced: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        self._synced = time.monotonic()

    def append(self, result: CaseResult) -> None:
        import fcntl

        data = result.to_line()
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(self._fd).st_size
            if size and os.pread(self._fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # seal a torn line left by a killed writer
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        now = time.monotonic()
        if now - self._synced >= FSYNC_EVERY_S:
            self._synced = now
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1


@dataclass(slots=True)
class ReadStats:
    """Lines of a results file that could not be read, by reason."""

    torn: int = 0  # cut short by a killed writer (no newline, or not UTF-8/JSON)
    unreadable: int = 0  # complete JSON of another shape (an incompatible version)


def read_results(path: Path, stats: ReadStats | None = None) -> Iterator[CaseResult]:
    """Yields every readable line of a results file, in file order.

    The file is read as bytes and each line decoded on its own, so a line torn inside a
    multi-byte character (a writer killed mid-write) is skipped alone; lines after it,
    written by a resumed run, are kept. Skipped lines are counted in ``stats``.
    """
    for _, result in read_lines(path, stats):
        yield result


def read_lines(path: Path, stats: ReadStats | None = None) -> Iterator[tuple[int, CaseResult]]:
    """(byte offset of its line, result) of every readable line, as :func:`read_results`;
    the offset reads the line back later (:func:`read_at`) without holding the result."""
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return
    with fh:
        for start, _, result in scan_lines(fh, stats):
            yield start, result


def scan_lines(
    fh: BinaryIO, stats: ReadStats | None = None
) -> Iterator[tuple[int, bytes, CaseResult]]:
    """(offset, the line's bytes, result) of every readable line of an open results file,
    from its start (:func:`read_lines`, for a reader that keeps the file open)."""
    stats = stats if stats is not None else ReadStats()
    shared: dict[str, str] = {}
    fh.seek(0)
    offset = 0
    for raw in fh:
        start, offset = offset, offset + len(raw)
        if not raw.endswith(b"\n"):
            stats.torn += 1  # the writer died mid-line (the last line of the file)
            continue
        try:
            data = json.loads(_text(raw, start))
        except ValueError:  # UnicodeDecodeError included
            stats.torn += 1
            continue
        try:
            _share_strings(data, shared)
            result = CaseResult.from_dict(data)
        except (TypeError, KeyError, ValueError, AttributeError):
            stats.unreadable += 1
            continue
        yield start, raw, result


def read_at(fh: BinaryIO, offset: int, shared: dict[str, str]) -> CaseResult:
    """The result on the line at ``offset`` of an open results file (one that
    :func:`read_lines` read there), its repeating texts shared through ``shared``."""
    fh.seek(offset)
    return parse_line(fh.readline(), offset, shared)


def parse_line(raw: bytes, offset: int, shared: dict[str, str]) -> CaseResult:
    """The result on a line read at ``offset`` (one :func:`scan_lines` read whole)."""
    data = json.loads(_text(raw, offset))
    _share_strings(data, shared)
    return CaseResult.from_dict(data)


_BOM = b"\xef\xbb\xbf"


def _text(raw: bytes, offset: int) -> str:
    # A BOM (the file saved by an editor that adds one) is not part of the first result:
    # json.loads refuses it, and the line would be counted as torn and called again.
    if offset == 0 and raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    return raw.decode("utf-8")


_SHARED_FIELDS = (
    "run_id",
    "suite",
    "feature",
    "suite_hash",
    "config_id",
    "tier",
    "model",
    "worker",
    "expected",
)
"""Fields that repeat across a run's lines (json.loads makes a new string for each)."""


def _share_strings(data: dict[str, Any], shared: dict[str, str]) -> None:
    """Replaces each repeating field's text by one shared copy: the report holds every
    result of the run at once, and 20,000 copies of the same run id add up."""
    for name in _SHARED_FIELDS:
        value = data.get(name)
        if isinstance(value, str):
            data[name] = shared.setdefault(value, value)
    call = data.get("call")
    if isinstance(call, dict) and isinstance(call.get("finish_reason"), str):
        call["finish_reason"] = shared.setdefault(call["finish_reason"], call["finish_reason"])
    for grade in data.get("grades") or ():
        if isinstance(grade, dict) and isinstance(grade.get("grader"), str):
            grade["grader"] = shared.setdefault(grade["grader"], grade["grader"])


def latest_by_item(results: Iterable[CaseResult]) -> dict[ItemKey, CaseResult]:
    """The last recorded result of each item (a resumed or re-run item supersedes)."""
    latest: dict[ItemKey, CaseResult] = {}
    for result in results:
        latest[result.key] = result
    return latest


def to_rows(
    results: Iterable[CaseResult], columns: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """Flat per-item rows (for pandas and for the report's per-case table).

    ``columns`` keeps only those (the statistics read a dozen numbers and flags per item;
    without the outputs and grades, a 20,000-item frame is a fraction of the size).
    """
    rows = []
    for r in results:
        row = _row(r)
        rows.append(row if columns is None else {name: row[name] for name in columns})
    return rows


def _row(r: CaseResult) -> dict[str, Any]:
    c = r.call
    return {
        "suite": r.suite,
        "feature": r.feature,
        "case_id": r.case_id,
        "config_id": r.config_id,
        "repeat": r.repeat,
        "group": r.group,
        "tier": r.tier,
        "model": r.model,
        "score": r.score,
        "passed": r.passed,
        "error": r.errored,
        "error_message": c.error,
        "cost_usd": c.cost_usd,
        "saved_usd": c.saved_usd,
        "input_tokens": c.input_tokens,
        "output_tokens": c.output_tokens,
        "latency_ms": c.latency_ms,
        "ttft_ms": c.ttft_ms,
        "cached": c.cached,
        "hit_latency_ms": c.hit_latency_ms,
        "attempts": c.attempts,
        "output": c.output,
        "finish_reason": c.finish_reason,
        "expected": r.expected,
        # What grading itself cost (an LLM judge): kept apart from the config's cost.
        "grading_cost_usd": _grading_cost(r.grades),
        "grading_calls": sum(g.calls for g in r.grades),
        "grades": [
            {
                "grader": g.grader,
                "score": g.score,
                "passed": g.passed,
                "reason": g.reason,
                "error": g.error,
                "flags": list(g.flags),
            }
            for g in r.grades
        ],
    }


def _grading_cost(grades: Iterable[GradeResult]) -> float | None:
    costs = [g.cost_usd for g in grades if g.calls]
    if not costs:
        return 0.0
    return None if any(c is None for c in costs) else float(sum(c for c in costs if c))
