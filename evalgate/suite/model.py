"""A validated suite, as frozen value objects. Nothing inward of the loader sees raw YAML."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

LOCAL_PREFIX = "local/"
TRANSPORTS = ("auto", "native", "litellm")


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_mtok + output_tokens * self.output_per_mtok) / 1e6


@dataclass(frozen=True, slots=True)
class Tier:
    """A model a config can run on.

    Attributes:
        name: the tier's name in the suite (``small``, ``large``).
        model: litellm model string, or ``local/<name>`` for an embedded local model.
        price: explicit price; None means "ask litellm's price map".
        api_base: endpoint override (for self-hosted OpenAI-compatible servers).
        api_key_env: name of the environment variable holding the key (never the key).
        rpm, tpm: optional requests/tokens per minute limits for this tier.
        timeout_s: per-attempt timeout.
        transport: ``native`` (OpenAI protocol over HTTP), ``litellm``, or ``auto``.
    """

    name: str
    model: str
    price: Price | None = None
    api_base: str | None = None
    api_key_env: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    timeout_s: float = 120.0
    transport: str = "auto"


@dataclass(frozen=True, slots=True)
class GraderSpec:
    """One grader as written in the suite.

    Attributes:
        type: registered grader name, possibly with a ``not-`` prefix.
        params: the grader's own options (templated strings are rendered per case).
        weight: weight in the case's weighted mean.
        line: where it was written, for error messages.
    """

    type: str
    params: Mapping[str, Any]
    weight: float = 1.0
    line: int = 0


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str  # a jinja2 template over the case's variables


@dataclass(frozen=True, slots=True)
class Case:
    """One eval case.

    Attributes:
        id: stable identifier (from the data, never from a position).
        vars: template variables.
        graders: graders for this case only (added to the suite's).
        must_pass: a miss under any config fails the item.
        group: cluster for resampling statistics.
        cluster: the intent this request paraphrases (traffic for a semantic cache config:
            requests of one cluster should share an answer; cross-fitting folds by it).
        tenant: whose request it is; two tenants never share a cached answer.
        near_miss: set on a request written to look like another cluster's but ask
            something else (a number changed, a negation, an entity swapped); its kind,
            e.g. ``number``. Its wrong-hit rate is reported apart.
        source: ``file:line`` the case came from.
        grading_hash: hash of everything that decides this case's grades (its graders and
            the suite's, the files and code they read, the threshold): when only this
            changes, a resumed run regrades the stored output instead of calling again.
    """

    id: str
    vars: Mapping[str, Any]
    graders: tuple[GraderSpec, ...] = ()
    must_pass: bool = False
    group: str | None = None
    source: str = ""
    grading_hash: str = ""
    cluster: str | None = None
    tenant: str | None = None
    near_miss: str | None = None


@dataclass(frozen=True, slots=True)
class Derivation:
    """How a derived config composes its answers from two measured configs' (no calls).

    Attributes:
        kind: "router" (a learned router with a certified bound), "cascade", or "semantic"
            (a semantic cache replayed over the suite's traffic, evalgate.derived.semcache).
        small, large: the configs it chooses between (a cascade's ``first`` and ``then``;
            for a semantic cache both name its twin: the measured config it caches).
        max_loss, alpha: the router's bound on expected quality loss against always-large,
            held with probability >= 1 - alpha (a semantic cache's alpha, likewise).
        max_wrong_hit: a semantic cache's bound on the share of requests served a wrong
            cached answer.
        lookup_ms: the latency a semantic cache lookup adds to every request (declared, so
            a recomposed report is identical; measured by benchmarks/semantic_cache.py).
        folds: cross-fitting folds (every case is routed by a model that never saw it).
        accept: a cascade's checks on the first answer; one failing escalates.
    """

    kind: str
    small: str
    large: str
    max_loss: float = 0.0
    alpha: float = 0.0
    folds: int = 5
    accept: tuple[GraderSpec, ...] = ()
    max_wrong_hit: float = 0.0
    lookup_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Config:
    """A candidate configuration (defaults already merged in).

    Attributes:
        id: stable identifier.
        tier: tier name.
        context_trim: fraction of the context variable's tokens kept, 0 < r <= 1.
        max_tokens: output cap.
        cache: read and write the response cache.
        temperature: sampling temperature.
        stream: stream the response (needed to measure time to first token).
        repeats: independent calls per case.
        gate: whether the PR gate checks this config.
        batch: send the calls as provider batches (half price, results within 24 h);
            latency is then the batch's turnaround, not a per-call figure.
        derived: set for a routed, cascade or semantic cache config, whose results are
            composed from measured configs' after the run (it has no items and makes no
            calls); its other fields are the large config's (a semantic cache's twin's).
    """

    id: str
    tier: str
    context_trim: float = 1.0
    max_tokens: int = 256
    cache: bool = False
    temperature: float = 0.0
    stream: bool = True
    repeats: int = 1
    gate: bool = False
    derived: Derivation | None = None
    batch: bool = False


@dataclass(frozen=True, slots=True)
class Slo:
    """Limits a recommended config must meet (None: no limit)."""

    p95_latency_ms: float | None = None
    cost_per_case: float | None = None


@dataclass(frozen=True, slots=True)
class Gate:
    """The suite's non-inferiority gate.

    Attributes:
        margin: the largest quality loss the team accepts (δ, on the 0..1 score scale).
        alpha: one-sided significance level.
        slo: limits for the recommendation.
        force: gate even with fewer than 100 paired cases (underpowered).
    """

    margin: float = 0.05
    alpha: float = 0.05
    slo: Slo = field(default_factory=Slo)
    force: bool = False


@dataclass(frozen=True, slots=True)
class TrimSpec:
    """Which variable is trimmed and which one is the question it is trimmed for."""

    variable: str = "context"
    query: str = "question"


@dataclass(frozen=True, slots=True)
class Suite:
    """A validated suite.

    Attributes:
        name, feature, description: identity; feature tags cost and latency by feature.
        path: the suite file.
        tiers: tier name -> Tier.
        prompt: chat messages (templates).
        cases: in file order; ids unique.
        graders: applied to every case.
        threshold: a case passes when its weighted score >= threshold; None means every
            grader must pass.
        configs: in file order; ids unique.
        baseline: id of the baseline config.
        gate: non-inferiority margin and alpha.
        trim: which variable context_trim shortens, and for which question.
        suite_hash: sha256 of the definition and the cases, to detect stale comparisons.
    """

    name: str
    feature: str
    path: str
    tiers: Mapping[str, Tier]
    prompt: tuple[Message, ...]
    cases: tuple[Case, ...]
    graders: tuple[GraderSpec, ...]
    configs: tuple[Config, ...]
    baseline: str
    threshold: float | None = None
    gate: Gate = field(default_factory=Gate)
    trim: TrimSpec = field(default_factory=TrimSpec)
    description: str = ""
    suite_hash: str = ""

    def tier_of(self, config: Config) -> Tier:
        return self.tiers[config.tier]


def frozen_mapping(data: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(data))
