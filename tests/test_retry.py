"""The retry decision, the retry budget and the deadlines: pure functions and objects, table-driven."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from llmpulse.policies import RetryBudget, Timeouts, classify_exception, decide_retry


def decide(**kwargs: Any) -> tuple[float | None, str]:
    base: dict[str, Any] = {
        "retries_taken": 0,
        "max_retries": 2,
        "status": None,
        "headers": {},
        "failure": None,
        "quota_exhausted": False,
        "remaining_s": None,
        "backoff_base_s": 0.5,
        "backoff_max_s": 8.0,
        "random": lambda: 1.0,
    }
    base.update(kwargs)
    decision = decide_retry(**base)
    return decision.delay_s, decision.reason


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (500, {}, (0.5, "5xx")),
        (503, {}, (0.5, "5xx")),
        (529, {}, (0.5, "5xx")),
        (429, {}, (0.5, "429")),
        (408, {}, (0.5, "408")),
        (409, {}, (0.5, "409")),
        (400, {}, (None, "not_retryable")),
        (401, {}, (None, "not_retryable")),
        (403, {}, (None, "not_retryable")),
        (404, {}, (None, "not_retryable")),
        (422, {}, (None, "not_retryable")),
        (418, {}, (None, "not_retryable")),
        (418, {"x-should-retry": "true"}, (0.5, "server_asked")),
        (400, {"x-should-retry": "true"}, (0.5, "server_asked")),  # the server's word wins, as in the SDKs
        (401, {"x-should-retry": "true"}, (0.5, "server_asked")),
        (500, {"x-should-retry": "false"}, (None, "server_refused")),
        (429, {"retry-after-ms": "1500", "retry-after": "9"}, (1.5, "429")),
        (429, {"retry-after": "0.25"}, (0.25, "429")),
        (429, {"retry-after": "0"}, (0.5, "429")),  # no usable hint: backoff
    ],
)
def test_status_rules(status: int, headers: dict[str, str], expected: tuple[float | None, str]) -> None:
    """408/409/429/5xx retry, other statuses not, unless the server's x-should-retry says otherwise."""
    assert decide(status=status, headers=headers) == expected


def test_a_spent_quota_is_not_retried_when_asked() -> None:
    """A 429 that says the quota is spent will not refill by waiting: refused when the user says so."""
    assert decide(status=429, quota_exhausted=True) == (None, "quota_exhausted")
    assert decide(status=500, headers={"x-should-retry": "false"}, quota_exhausted=True) == (
        None,
        "server_refused",
    )


def test_a_retry_after_longer_than_the_sdk_waits_is_not_retried() -> None:
    """OpenAI's SDK does not retry when asked to wait over 120 s; an overflowing hint is too long, too."""
    assert decide(status=429, headers={"retry-after": "121"}, max_retry_after_s=120.0) == (
        None,
        "retry_after_too_long",
    )
    assert decide(status=429, headers={"retry-after": "1e999"}, max_retry_after_s=120.0) == (
        None,
        "retry_after_too_long",
    )
    assert decide(status=429, headers={"retry-after": "120"}, max_retry_after_s=120.0) == (120.0, "429")
    # No usable hint (a literal infinity, NaN, an overflow below zero): backoff, as the SDK does.
    for hint in ("inf", " +Infinity ", "NaN", "-1e999"):
        assert decide(status=429, headers={"retry-after": hint}, max_retry_after_s=120.0) == (0.5, "429")
    # Anthropic's waits as long as asked, capped where time.sleep gives up.
    assert decide(status=429, headers={"retry-after": "600"}) == (600.0, "429")
    assert decide(status=429, headers={"retry-after": "1e999"}) == (4_294_967.0, "429")


@pytest.mark.parametrize(
    ("failure", "retried", "expected"),
    [
        ("timeout", True, (0.5, "timeout")),
        ("connect", True, (0.5, "connect")),
        ("local_pool", True, (0.5, "local_pool")),
        ("other", True, (0.5, "other")),
        ("timeout", False, (None, "not_retryable")),
        ("other", False, (None, "not_retryable")),
    ],
)
def test_failed_sends(failure: str, retried: bool, expected: tuple[float | None, str]) -> None:
    """A failed send is retried exactly when the SDK would retry that error."""
    assert decide(status=None, headers=None, failure=failure, failure_retried=retried) == expected


def test_exceptions_are_classified_by_the_http_stack_class() -> None:
    """httpx2's timeouts, transport errors and pool timeouts; anything else is "other"."""
    request = httpx2.Request("POST", "http://x")
    assert classify_exception(httpx2.ReadTimeout("slow", request=request)) == "timeout"
    assert classify_exception(httpx2.ConnectTimeout("slow", request=request)) == "timeout"
    assert classify_exception(httpx2.ConnectError("refused", request=request)) == "connect"
    assert classify_exception(httpx2.RemoteProtocolError("reset", request=request)) == "connect"
    assert classify_exception(httpx2.PoolTimeout("full", request=request)) == "local_pool"
    assert classify_exception(ValueError("bug")) == "other"


def test_full_jitter_backoff_doubles_to_its_cap() -> None:
    """The backoff ceiling doubles from base to max; the delay is random() times it (full jitter)."""
    ceilings = [decide(status=500, retries_taken=n, max_retries=9)[0] for n in range(7)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert decide(status=500, random=lambda: 0.25)[0] == 0.125
    assert decide(status=500, random=lambda: 0.0)[0] == 0.0


def test_max_retries_and_the_deadline_stop_retries() -> None:
    """No retry past max_retries, nor one whose sleep would end after the deadline."""
    assert decide(status=500, retries_taken=2) == (None, "max_retries")
    assert decide(status=500, remaining_s=0.4) == (None, "deadline")
    assert decide(status=500, remaining_s=0.6) == (0.5, "5xx")
    assert decide(status=429, headers={"retry-after": "30"}, remaining_s=10.0) == (None, "deadline")


def test_retry_budget_bounds_retries_by_ratio_plus_reserve() -> None:
    """Over any run, retries <= reserve + ratio * requests; the balance never exceeds the reserve."""
    budget = RetryBudget(ratio=0.1, reserve=10)
    granted = 0
    for _ in range(1000):  # an outage: every request fails and wants all its retries
        budget.on_request()
        granted += sum(budget.try_spend() for _ in range(2))
    # The bound, and tight: only the first deposit is lost, landing on a full balance.
    assert 10 + 100 - 1 <= granted <= 10 + 100
    assert budget.refused == 2000 - granted
    for _ in range(10_000):  # a long calm stretch banks no more than the reserve
        budget.on_request()
    assert budget.balance == 10


def test_retry_budget_has_no_float_drift() -> None:
    """Ten requests at ratio 0.1 earn exactly one retry, however many times over."""
    budget = RetryBudget(ratio=0.1, reserve=0)
    for _ in range(100_000):
        for _ in range(10):
            budget.on_request()
        assert budget.try_spend()
        assert not budget.try_spend()


def test_retry_budget_refund_gives_back_an_unsent_retry() -> None:
    """A retry granted but never sent is given back: balance and spend as if never asked, capped."""
    budget = RetryBudget(ratio=0.1, reserve=2)
    assert budget.try_spend()
    assert budget.try_spend()
    assert not budget.try_spend()
    budget.refund()
    assert (budget.balance, budget.spent) == (1, 1)
    assert budget.try_spend()
    budget.refund()
    budget.refund()
    budget.refund()  # more refunds than spends never bank beyond the reserve
    assert budget.balance == 2


def test_retry_budget_rejects_negative_values() -> None:
    """A negative ratio or reserve is a mistake, named in the error."""
    with pytest.raises(ValueError, match="ratio"):
        RetryBudget(ratio=-0.1)
    with pytest.raises(ValueError, match="reserve"):
        RetryBudget(reserve=-1)


def test_by_default_attempts_get_the_sdks_timeout_and_calls_no_deadline() -> None:
    """Unset limits leave the SDK's timeout as it is (the same object) and set no whole-call deadline."""
    timeouts = Timeouts()
    sdk = {"connect": 5.0, "read": 600.0, "write": 600.0, "pool": 600.0}
    assert timeouts.attempt_extension(sdk, streamed=False, max_tokens=None, remaining_s=None) is sdk
    assert timeouts.attempt_extension(None, streamed=True, max_tokens=None, remaining_s=None) is None
    assert timeouts.total_for(streamed=False, max_tokens=None) is None
    assert timeouts.body_read_s(sdk, streamed=True) is None


def test_the_fixed_preset_is_the_fields_recipe() -> None:
    """8 s plus 20 ms per requested token; an unset max_tokens counts as 500; capped; room for a retry."""
    timeouts = Timeouts.fixed()
    assert timeouts.attempt_read_s(streamed=False, max_tokens=16) == pytest.approx(8.32)
    assert timeouts.attempt_read_s(streamed=False, max_tokens=None) == pytest.approx(18.0)
    assert timeouts.attempt_read_s(streamed=False, max_tokens=1_000_000) == 300.0
    assert timeouts.attempt_read_s(streamed=True, max_tokens=1_000_000) == 10.0
    assert timeouts.total_for(streamed=False, max_tokens=16) == pytest.approx(2 * (5 + 8.32) + 2)
    assert Timeouts(total_s=3.0).total_for(streamed=True, max_tokens=None) == 3.0


def test_a_limit_that_is_set_caps_the_users_timeout_never_lengthens_it() -> None:
    """Each phase takes the smaller of ours, the SDK's (the user's timeout) and the time left."""
    timeouts = Timeouts.fixed()
    sdk = {"connect": 5.0, "read": 600.0, "write": 600.0, "pool": 600.0}
    ext = timeouts.attempt_extension(sdk, streamed=False, max_tokens=16, remaining_s=100.0)
    assert ext == {"connect": 5.0, "read": pytest.approx(8.32), "write": 100.0, "pool": 5.0}
    assert ext is not sdk
    assert sdk["read"] == 600.0  # the SDK's own dict is never changed
    tight = {"connect": 1.0, "read": 2.0, "write": 2.0, "pool": 2.0}
    assert timeouts.attempt_extension(tight, streamed=False, max_tokens=16, remaining_s=100.0) == tight
    assert timeouts.attempt_extension(sdk, streamed=False, max_tokens=16, remaining_s=3.0)["read"] == 3.0
    assert timeouts.body_read_s(sdk, streamed=True) == 30.0
    assert timeouts.body_read_s(tight, streamed=True) == 2.0
    assert timeouts.body_read_s(sdk, streamed=False) is None
    only_read = Timeouts(read_s=1.0, read_per_token_s=0.0)
    assert only_read.attempt_extension(sdk, streamed=False, max_tokens=None, remaining_s=None) == {
        **sdk,
        "read": 1.0,
    }
    assert Timeouts().attempt_extension(
        sdk, streamed=False, max_tokens=None, remaining_s=2.0
    ) == dict.fromkeys(sdk, 2.0)


@pytest.mark.parametrize("field", ["connect_s", "read_s", "stream_first_byte_s", "stream_idle_s", "total_s"])
def test_timeouts_must_be_positive(field: str) -> None:
    """A zero, negative or infinite limit names the field."""
    with pytest.raises(ValueError, match=field):
        Timeouts(**{field: 0.0})
    with pytest.raises(ValueError, match=field):
        Timeouts(**{field: float("inf")})
