"""Per-user limits: reserve the worst case before a call, settle to the real usage after.

A budget that concurrent requests can overspend is no budget, so the check and the
reservation are one atomic step in the shared backend (an SQLite ``BEGIN IMMEDIATE``
transaction across processes, a Redis Lua script across instances; see
:mod:`evalgate.runtime.backends.sqlite_limits` and ``redis_limits``):

1. **admit**: for every limit that applies to the call (the user's, the user's within the
   feature, the tenant's), reserve the call's worst case: 1 request, its input estimate
   plus its output cap in tokens, and what that costs on the dearest route. If any
   reservation would take settled usage plus live reservations over a limit, nothing is
   reserved and :class:`LimitExceeded` is raised.
2. **settle**: after the call (a stream: when it ends, fails or is closed) the
   reservation is replaced by the real usage; the rest is released.
3. A reservation whose process died before settling expires after ``reservation_ttl_s``.

Windows are fixed and follow the application's clock in UTC: requests per calendar
minute, tokens and cost per calendar day (00:00 to 24:00 UTC). A call is counted in the
windows it was admitted in.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from evalgate.runtime.errors import PolicyError

if TYPE_CHECKING:  # the call path imports this module, not the other way round at run time
    from evalgate.runtime.callpath import PreparedCall
    from evalgate.runtime.ledger import UsageRecord
    from evalgate.runtime.policy_file import Route

log = logging.getLogger("evalgate.runtime")

METRICS = ("requests_per_minute", "tokens_per_day", "cost_per_day_usd")
MINUTE_S = 60
DAY_S = 86_400
DEFAULT_RESERVATION_TTL_S = 600.0
DEFAULT_MAX_TOKENS = 4096
KEEP_AFTER_WINDOW_S = 3_600  # settled counters outlive their window by this much, then go


# --- what a limit is --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits of one user (or tenant); None: that quantity is not limited.

    Attributes:
        requests_per_minute: calls admitted per UTC calendar minute.
        tokens_per_day: input plus output tokens per UTC day.
        cost_per_day_usd: spend per UTC day, in USD.
        count_cache_hits: whether a cache hit counts as a request for
            ``requests_per_minute`` (it never costs tokens or money).
    """

    requests_per_minute: int | None = None
    tokens_per_day: int | None = None
    cost_per_day_usd: float | None = None
    count_cache_hits: bool = True

    def __post_init__(self) -> None:
        for name in METRICS:
            value = getattr(self, name)
            if value is None:
                continue
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or value < 0:
                raise ValueError(f"Limits.{name}: expected a finite number >= 0, found {value!r}")

    def limit(self, metric: str) -> float | None:
        value = getattr(self, metric)
        return None if value is None else float(value)


UserLimits = Callable[[str], "Limits | None"]
"""Code's limits for a user the policy file does not name (e.g. by the user's plan)."""


@dataclass(frozen=True, slots=True)
class LimitRules:
    """Which limits apply to whom (the policy file's ``limits`` section, validated).

    Attributes:
        users: user -> limits across all features; ``"*"``: every other user.
        tenants: tenant -> limits shared by all its users; ``"*"``: every other tenant.
        features: feature -> (user -> limits within that feature; ``"*"``: other users).
    """

    users: Mapping[str, Limits] = field(default_factory=dict)
    tenants: Mapping[str, Limits] = field(default_factory=dict)
    features: Mapping[str, Mapping[str, Limits]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.users or self.tenants or self.features)


class LimitError(RuntimeError):
    """Base of the errors the limits raise before a call is made."""


class LimitExceeded(LimitError):
    """The call would cross a limit; nothing was reserved and no model was called.

    Raised by ``completion`` and ``acompletion`` alike.

    Attributes:
        scope: ``"user"``, ``"tenant"`` or ``"feature:<name>"`` (the user within a feature).
        subject: the user or tenant.
        limit_name: ``requests_per_minute``, ``tokens_per_day`` or ``cost_per_day_usd``.
        limit: the limit's value.
        used: settled usage plus live reservations in the current window.
        requested: what this call needed to reserve.
        retry_after_s: seconds until the window resets (None: this call alone needs more
            than the limit, so waiting will not help).
    """

    def __init__(
        self,
        *,
        scope: str,
        subject: str,
        limit_name: str,
        limit: float,
        used: float,
        requested: float,
        retry_after_s: float | None,
    ) -> None:
        self.scope = scope
        self.subject = subject
        self.limit_name = limit_name
        self.limit = limit
        self.used = used
        self.requested = requested
        self.retry_after_s = retry_after_s
        if retry_after_s is None:
            when = "this call alone needs more than the limit"
        else:
            when = f"retry after {retry_after_s:.0f} s (the window resets)"
        super().__init__(
            f"{scope} {subject!r}: {limit_name} limit {limit:g} would be exceeded "
            f"(used or reserved {used:.6g}, this call reserves {requested:.6g}); {when}"
        )

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes, fields and all
        fields = ("scope", "subject", "limit_name", "limit", "used", "requested")
        state = {name: getattr(self, name) for name in (*fields, "retry_after_s")}
        return (_rebuild_exceeded, (state,))


def _rebuild_exceeded(state: dict[str, Any]) -> LimitExceeded:
    return LimitExceeded(**state)


class LimitsUnavailable(LimitError):
    """The limits' backend cannot be reached, and limits fail closed (the default)."""


# --- what a store does -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Need:
    """One counter a call reserves on: the key names scope, subject, metric and window."""

    key: str
    amount: float
    limit: float
    expires_in_s: float  # how long the counter must outlive ``now`` (its window + a margin)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Which need did not fit, and the usage it met."""

    index: int
    used: float


class LimitStore(Protocol):
    """Atomic check-and-reserve and settle on a backend (one transaction or script each)."""

    def reserve(self, rid: str, needs: list[Need], now: float, expires: float) -> Refusal | None:
        """Reserves every need under ``rid`` until ``expires``, or none (and says why)."""
        ...

    def settle(self, rid: str, actual: list[Need], now: float) -> None:
        """Drops ``rid``'s reservations and adds ``actual`` to the settled counters."""
        ...

    def close(self) -> None: ...


# --- estimating the worst case ------------------------------------------------------------------


def input_token_bound(messages: Any, params: Mapping[str, Any]) -> int:
    """An upper estimate of a request's input tokens: UTF-8 bytes of its JSON.

    Byte-level BPE tokenizers never emit more tokens than the bytes they encode, and the
    JSON quoting and keys stand in for the chat template's few tokens per message; tools
    and functions sent with the request count too. Cheap (no tokenizer is loaded), and
    pessimistic: English text is ~4 bytes per token, so the input part of a reservation is
    ~4x the real count until the call settles.
    """
    extra = {k: params[k] for k in ("tools", "functions") if params.get(k)}
    text = json.dumps([messages, extra], ensure_ascii=False, default=str)
    return len(text.encode("utf-8"))


def output_token_bound(params: Mapping[str, Any], default: int) -> int:
    """The output cap after the policy's cap, times ``n`` choices."""
    cap = params.get("max_completion_tokens") or params.get("max_tokens") or default
    n = params.get("n") or 1
    return int(cap) * max(1, int(n))


# --- the guard ------------------------------------------------------------------------------------


def _key(*parts: str) -> str:
    return "|".join(quote(p, safe="") for p in parts)


@dataclass(frozen=True, slots=True)
class _Applied:
    """One (scope, subject, limits) that applies to a call."""

    scope: str
    subject: str
    limits: Limits


class _Reservation:
    """The guard's admission: settles once, to the real usage."""

    __slots__ = ("_done", "_guard", "applied", "cost", "now", "rid", "tokens")

    def __init__(
        self,
        guard: LimitGuard,
        rid: str,
        applied: list[tuple[_Applied, str, Need]],
        tokens: int,
        cost: float,
        now: float,
    ) -> None:
        self._guard = guard
        self._done = False
        self.rid = rid
        self.applied = applied
        self.tokens = tokens
        self.cost = cost
        self.now = now

    def settle(self, record: UsageRecord) -> None:
        if self._done:
            return
        self._done = True
        self._guard._settle(self, record)


class _NoReservation:
    """A call no limit applies to, or admitted while the store was down (fail-open)."""

    def settle(self, record: UsageRecord) -> None:
        return None


class LimitGuard:
    """Enforces :class:`LimitRules` (and code's per-user defaults) on each call.

    Args:
        store: the backend's :class:`LimitStore` (``open_limit_store(backend)``).
        rules: the policy file's limits.
        user_limits: limits for a user the file does not name (e.g. by plan); return
            None to fall back to the file's ``"*"`` entry.
        fail_open: when the store cannot be reached, admit calls unchecked (logged)
            instead of refusing them with :class:`LimitsUnavailable` (the default).
        reservation_ttl_s: how long a reservation that is never settled (its process was
            killed) holds its budget.
        default_max_tokens: the output bound when neither the policy nor the caller caps
            ``max_tokens``.
        clock: Unix seconds (tests inject one to cross a window boundary).
    """

    def __init__(
        self,
        store: LimitStore,
        rules: LimitRules,
        *,
        user_limits: UserLimits | None = None,
        fail_open: bool = False,
        reservation_ttl_s: float = DEFAULT_RESERVATION_TTL_S,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (math.isfinite(reservation_ttl_s) and reservation_ttl_s > 0):
            raise ValueError(f"reservation_ttl_s: expected a number > 0, found {reservation_ttl_s}")
        self.store = store
        self.rules = rules
        self.user_limits = user_limits
        self.fail_open = fail_open
        self.reservation_ttl_s = float(reservation_ttl_s)
        self.default_max_tokens = int(default_max_tokens)
        self.clock = clock
        self._prices: dict[str, tuple[float, float] | None] = {}

    # -- which limits apply ---------------------------------------------------------------

    def applicable(self, feature: str, user: str, tenant: str) -> list[_Applied]:
        """The limits on this (feature, user, tenant); a call without a user has no
        per-user limits (only its tenant's)."""
        out: list[_Applied] = []
        if user:
            limits = self.rules.users.get(user)
            if limits is None and self.user_limits is not None:
                limits = self.user_limits(user)
                if limits is not None and not isinstance(limits, Limits):
                    raise TypeError(
                        f"LimitOptions.user_limits({user!r}) returned {limits!r}; "
                        "expected evalgate.runtime.Limits or None"
                    )
            if limits is None:
                limits = self.rules.users.get("*")
            if limits is not None:
                out.append(_Applied("user", user, limits))
            per_feature = self.rules.features.get(feature, {})
            limits = per_feature.get(user, per_feature.get("*"))
            if limits is not None:
                out.append(_Applied(f"feature:{feature}", user, limits))
        if tenant:
            limits = self.rules.tenants.get(tenant, self.rules.tenants.get("*"))
            if limits is not None:
                out.append(_Applied("tenant", tenant, limits))
        return out

    # -- the worst case -------------------------------------------------------------------

    def _price(self, route: Route) -> tuple[float, float] | None:
        """USD per input and output token of a route (None: no price is known)."""
        if route.price is not None:
            return route.price.input_per_mtok / 1e6, route.price.output_per_mtok / 1e6
        if route.model not in self._prices:
            from evalgate.runtime.responses import litellm_module

            try:
                prompt, completion = litellm_module().cost_per_token(
                    model=route.model, prompt_tokens=1_000_000, completion_tokens=1_000_000
                )
                self._prices[route.model] = (float(prompt) / 1e6, float(completion) / 1e6)
            except Exception:  # litellm raises for a model it has no price for
                self._prices[route.model] = None
        return self._prices[route.model]

    def _worst_cost(self, call: PreparedCall, tokens_in: int, tokens_out: int) -> float:
        worst = 0.0
        for route in call.routes:
            price = self._price(route)
            if price is None:
                raise PolicyError(
                    f"features.{call.feature.name}: {route.where}: a cost limit applies to "
                    f"this call but {route.model!r} has no price; give the route a `price`"
                )
            worst = max(worst, tokens_in * price[0] + tokens_out * price[1])
        return worst

    # -- admit and settle -----------------------------------------------------------------

    def admit(
        self, call: PreparedCall, ttl_s: float | None = None
    ) -> _Reservation | _NoReservation:
        """Reserves the call's worst case; ``ttl_s``: how long the reservation holds if never
        settled (default ``reservation_ttl_s``; a batch request's is the batch window)."""
        applied = self.applicable(call.feature.name, call.user, call.tenant)
        if not applied:
            return _NoReservation()
        tokens_in = input_token_bound(call.messages, call.params)
        tokens_out = output_token_bound(call.params, self.default_max_tokens)
        tokens = tokens_in + tokens_out
        needs_cost = any(a.limits.cost_per_day_usd is not None for a in applied)
        cost = self._worst_cost(call, tokens_in, tokens_out) if needs_cost else 0.0
        now = self.clock()
        minute, day = int(now // MINUTE_S), int(now // DAY_S)
        amounts = {
            "requests_per_minute": 1.0,
            "tokens_per_day": float(tokens),
            "cost_per_day_usd": cost,
        }
        planned: list[tuple[_Applied, str, Need]] = []
        for entry in applied:
            for metric in METRICS:
                limit = entry.limits.limit(metric)
                if limit is None:
                    continue
                per_minute = metric == "requests_per_minute"
                window, length = (minute, MINUTE_S) if per_minute else (day, DAY_S)
                key = _key(entry.scope, entry.subject, metric, str(window))
                left = (window + 1) * length - now
                planned.append(
                    (entry, metric, Need(key, amounts[metric], limit, left + KEEP_AFTER_WINDOW_S))
                )
        rid = uuid.uuid4().hex
        needs = [need for _, _, need in planned]
        try:
            ttl = self.reservation_ttl_s if ttl_s is None else ttl_s
            refusal = self.store.reserve(rid, needs, now, now + ttl)
        except Exception as exc:
            return self._unavailable(exc, "reserve")
        if refusal is not None:
            entry, metric, need = planned[refusal.index]
            window_left = need.expires_in_s - KEEP_AFTER_WINDOW_S
            raise LimitExceeded(
                scope=entry.scope,
                subject=entry.subject,
                limit_name=metric,
                limit=need.limit,
                used=refusal.used,
                requested=need.amount,
                retry_after_s=None if need.amount > need.limit else max(0.0, window_left),
            )
        return _Reservation(self, rid, planned, tokens, cost, now)

    def _unavailable(self, exc: Exception, what: str) -> _NoReservation:
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        if self.fail_open:
            log.error("evalgate: limits not checked (fail-open), the store failed: %s", detail)
            return _NoReservation()
        raise LimitsUnavailable(
            f"evalgate limits: cannot {what} on {getattr(self.store, 'url', 'the backend')} "
            f"({detail}); the call is refused because limits fail closed "
            "(LimitOptions(fail_open=True) admits calls unchecked while it is down)"
        ) from None

    def _actual(self, reservation: _Reservation, record: UsageRecord) -> tuple[float, float]:
        """(tokens, cost) the call really used."""
        if record.cached or record.attempts == 0:
            return 0.0, 0.0  # a cache hit, or the call never reached a model
        if record.tokens_in is not None and record.tokens_out is not None:
            tokens = float(record.tokens_in + record.tokens_out)
            cost = record.cost_usd if record.cost_usd is not None else reservation.cost
            return tokens, float(cost)
        if record.error is not None and not record.stream:
            return 0.0, 0.0  # the provider answered an error instead of an answer
        # A stream that was cut, abandoned or failed reports no usage, yet the provider
        # may bill what it generated: the reservation stands.
        return float(reservation.tokens), reservation.cost

    def _settle(self, reservation: _Reservation, record: UsageRecord) -> None:
        tokens, cost = self._actual(reservation, record)
        actual: list[Need] = []
        for entry, metric, need in reservation.applied:
            if metric == "requests_per_minute":
                counted = record.attempts > 0 or (record.cached and entry.limits.count_cache_hits)
                amount = 1.0 if counted else 0.0
            else:
                amount = tokens if metric == "tokens_per_day" else cost
            actual.append(Need(need.key, amount, need.limit, need.expires_in_s))
        try:
            self.store.settle(reservation.rid, actual, reservation.now)
        except Exception as exc:  # the call happened: never fail it here
            log.error(
                "evalgate: a limit reservation could not be settled (it expires in %.0f s): %s: %s",
                self.reservation_ttl_s,
                type(exc).__name__,
                exc,
            )


@dataclass(frozen=True, slots=True)
class LimitOptions:
    """How a :class:`~evalgate.runtime.Policy` enforces limits (``Policy(limits=...)``).

    Attributes:
        rules: limits given in code; they replace the policy file's ``limits`` section
            (None: the file's section applies).
        user_limits: limits for a user the rules do not name, e.g. by plan:
            ``lambda user: PLANS[plan_of(user)]``; return None to fall back to ``"*"``.
        fail_open: when the backend cannot be reached, admit calls unchecked (logged)
            instead of refusing them with :class:`LimitsUnavailable` (the default).
        reservation_ttl_s: how long the reservation of a call whose process died holds
            its budget (default 600 s; keep it above your longest call or stream).
        default_max_tokens: the output bound when neither the policy nor the caller caps
            ``max_tokens`` (default 4096).
        clock: Unix seconds (tests inject one to cross a window boundary).
    """

    rules: LimitRules | None = None
    user_limits: UserLimits | None = None
    fail_open: bool = False
    reservation_ttl_s: float = DEFAULT_RESERVATION_TTL_S
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    clock: Callable[[], float] = time.time


def limit_guard(
    file_rules: LimitRules, backend: Any, options: LimitOptions | None
) -> LimitGuard | None:
    """The guard a policy runs, or None when no limit is configured anywhere."""
    options = options or LimitOptions()
    rules = options.rules if options.rules is not None else file_rules
    if not rules and options.user_limits is None:
        return None
    from evalgate.runtime.backends import open_limit_store

    return LimitGuard(
        open_limit_store(backend),
        rules,
        user_limits=options.user_limits,
        fail_open=options.fail_open,
        reservation_ttl_s=options.reservation_ttl_s,
        default_max_tokens=options.default_max_tokens,
        clock=options.clock,
    )
