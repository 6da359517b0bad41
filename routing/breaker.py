"""A passive circuit breaker per upstream base URL, local to one gateway process (SPEC §4.8).

It counts connection failures and timeouts (never 5xx answers: an upstream that
answers is up). After ``failures`` in a row it opens for ``open_s`` seconds: callers
skip the upstream (fallback or 503 ``circuit_open``). When that time is over one trial
request is let through; its outcome closes the circuit or opens it again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# A trial that never reported back (its greenlet was killed) stops blocking after this.
TRIAL_GRACE_S = 120.0


@dataclass(slots=True)
class _Circuit:
    failures: int = 0
    open_until: float = 0.0  # monotonic time; 0: closed
    trial_started: float = 0.0  # monotonic time of the half-open trial in flight; 0: none


class CircuitBreaker:
    """Track failures per key (an upstream base URL) and say whether a call may go out.

    ``clock`` is an attribute so tests can swap in a fake one.
    """

    def __init__(self, failures: int, open_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.open_s = open_s
        self.clock = clock
        self._circuits: dict[str, _Circuit] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Return True when a request to ``key`` may be sent now (closed, or the half-open trial)."""
        circuit = self._circuits.get(key)
        if circuit is None or circuit.open_until == 0.0:
            return True
        now = self.clock()
        with self._lock:
            if now < circuit.open_until:
                return False
            if circuit.trial_started and now - circuit.trial_started < TRIAL_GRACE_S:
                return False  # one trial at a time decides
            circuit.trial_started = now
            return True

    def record_success(self, key: str) -> None:
        """The upstream answered (any status): close the circuit."""
        if key in self._circuits:
            with self._lock:
                self._circuits.pop(key, None)

    def record_failure(self, key: str) -> None:
        """A connection failure or timeout: count it; open at the threshold or on a failed trial."""
        with self._lock:
            circuit = self._circuits.setdefault(key, _Circuit())
            circuit.failures += 1
            if circuit.trial_started or circuit.failures >= self.failures:
                circuit.open_until = self.clock() + self.open_s
                circuit.trial_started = 0.0

    def is_open(self, key: str) -> bool:
        """Return True while ``key`` is refused without a trial (for metrics and tests)."""
        circuit = self._circuits.get(key)
        return circuit is not None and circuit.open_until > self.clock()
