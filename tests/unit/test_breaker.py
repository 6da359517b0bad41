"""The passive circuit breaker with a fake clock (SPEC §4.8)."""

from __future__ import annotations

from routing.breaker import CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_n_failures_in_a_row_and_a_success_resets_the_count() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=3, open_s=30, clock=clock)
    breaker.record_failure("u")
    breaker.record_failure("u")
    breaker.record_success("u")
    breaker.record_failure("u")
    breaker.record_failure("u")
    assert breaker.allow("u")
    breaker.record_failure("u")
    assert not breaker.allow("u")
    assert breaker.is_open("u")
    assert breaker.allow("other")


def test_after_the_open_period_one_trial_decides() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, open_s=30, clock=clock)
    breaker.record_failure("u")
    clock.now += 29.9
    assert not breaker.allow("u")
    clock.now += 0.2
    assert breaker.allow("u")  # the trial
    assert not breaker.allow("u")  # everyone else waits for it
    breaker.record_failure("u")  # trial failed: open again
    assert not breaker.allow("u")
    clock.now += 30.1
    assert breaker.allow("u")
    breaker.record_success("u")  # trial passed: closed
    assert breaker.allow("u") and breaker.allow("u")
