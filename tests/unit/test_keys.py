"""Key format, hash verification and the verified-key memo (access/keys.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import bcrypt
import pytest
from argon2 import PasswordHasher

from access import keys
from access.keys import KeyOutcome, KeyVerifier, hash_verify, key_generate, key_split
from gateway_core.snapshot import CompiledKey

# Cheap argon2id parameters keep these tests fast; the format is the same as production's.
_fast_hasher = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def compiled(prefix: str, secret: str, **fields: object) -> CompiledKey:
    record = CompiledKey(
        id=f"id-{prefix}",
        prefix=prefix,
        hash=_fast_hasher.hash(secret),
        application_id="app-1",
        expires_at=None,
        is_active=True,
    )
    return replace(record, **fields)  # type: ignore[arg-type]  # CompiledKey fields


class CountingOffload:
    """Run verifications inline and count them."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, fn: Callable[[str, str], bool], stored: str, secret: str) -> bool:
        self.calls += 1
        return fn(stored, secret)


@pytest.fixture
def offload() -> CountingOffload:
    return CountingOffload()


@pytest.fixture
def verifier(offload: CountingOffload) -> KeyVerifier:
    return KeyVerifier("unit-test-secret", offload=offload, now=lambda: NOW)


def test_generated_key_has_prefix_dot_secret_and_argon2id_hash() -> None:
    new = key_generate()
    prefix, secret = key_split(new.plaintext) or ("", "")
    assert prefix == new.prefix and prefix.startswith("gk_")
    assert len(secret) >= 43  # 32 random bytes, url-safe base64
    assert new.hash.startswith("$argon2id$")
    assert secret not in new.hash
    assert hash_verify(new.hash, secret)
    assert not hash_verify(new.hash, secret + "x")


def test_two_generated_keys_differ() -> None:
    a, b = key_generate(), key_generate()
    assert a.prefix != b.prefix and a.plaintext != b.plaintext


@pytest.mark.parametrize("presented", ["", "nodot", ".secret", "prefix.", "p." + "x" * 300])
def test_malformed_keys_do_not_split(presented: str) -> None:
    assert key_split(presented) is None


def test_bcrypt_hashes_still_verify() -> None:
    stored = bcrypt.hashpw(b"legacy-secret", bcrypt.gensalt(rounds=4)).decode()
    assert hash_verify(stored, "legacy-secret")
    assert not hash_verify(stored, "other")


def test_unknown_hash_formats_never_verify() -> None:
    assert not hash_verify("plaintext-secret", "plaintext-secret")
    assert not hash_verify("$argon2id$garbage", "x")


def test_hash_verify_is_counted() -> None:
    before = keys.verification_count()
    hash_verify(_fast_hasher.hash("s"), "s")
    assert keys.verification_count() == before + 1


def test_valid_key_is_verified_once_then_remembered(verifier: KeyVerifier, offload: CountingOffload) -> None:
    record = compiled("gk_a", "right")
    table = {"gk_a": record}
    for _ in range(5):
        verdict = verifier.check("gk_a.right", table, "10.0.0.1")
        assert verdict.outcome is KeyOutcome.VALID and verdict.key is record
    assert offload.calls == 1


def test_memo_never_holds_plaintext(verifier: KeyVerifier) -> None:
    verifier.check("gk_a.right-secret", {"gk_a": compiled("gk_a", "right-secret")}, "10.0.0.1")
    held = repr(vars(verifier._verified)) + repr(verifier._digest_key)
    assert "right-secret" not in held


def test_unknown_prefix_and_malformed_keys_cost_no_hashing(verifier: KeyVerifier, offload: CountingOffload) -> None:
    table = {"gk_a": compiled("gk_a", "right")}
    for presented in ("gk_zzz.right", "garbage", "gk_a."):
        assert verifier.check(presented, table, "10.0.0.1").outcome is KeyOutcome.INVALID
    assert offload.calls == 0


def test_revoked_key_is_refused_without_hashing(verifier: KeyVerifier, offload: CountingOffload) -> None:
    table = {"gk_a": compiled("gk_a", "right", is_active=False)}
    assert verifier.check("gk_a.right", table, "10.0.0.1").outcome is KeyOutcome.INVALID
    assert offload.calls == 0


def test_wrong_secret_is_remembered_as_wrong(verifier: KeyVerifier, offload: CountingOffload) -> None:
    table = {"gk_a": compiled("gk_a", "right")}
    for _ in range(5):
        assert verifier.check("gk_a.wrong", table, "10.0.0.1").outcome is KeyOutcome.INVALID
    assert offload.calls == 1


def test_unrelated_snapshot_swap_keeps_the_memo(verifier: KeyVerifier, offload: CountingOffload) -> None:
    record = compiled("gk_a", "right")
    verifier.check("gk_a.right", {"gk_a": record}, "10.0.0.1")
    # A new snapshot compiles new, equal records for unchanged keys.
    swapped = {"gk_a": replace(record), "gk_b": compiled("gk_b", "other")}
    assert verifier.check("gk_a.right", swapped, "10.0.0.1").outcome is KeyOutcome.VALID
    assert offload.calls == 1


@pytest.mark.parametrize(
    "change",
    [
        {"is_active": False},
        {"application_id": "app-2"},
        {"expires_at": NOW + timedelta(days=1)},
        {"hash": _fast_hasher.hash("right")},
    ],
    ids=["revoked", "moved", "expiry-edited", "re-hashed"],
)
def test_changed_key_is_forgotten(verifier: KeyVerifier, change: dict[str, object]) -> None:
    record = compiled("gk_a", "right")
    verifier.check("gk_a.right", {"gk_a": record}, "10.0.0.1")
    assert verifier.remembered() == (1, 0)
    changed = replace(record, **change)  # type: ignore[arg-type]  # CompiledKey fields
    verifier.check("other.key", {"gk_a": changed}, "10.0.0.1")
    assert verifier.remembered() == (0, 0)


def test_deleted_key_is_forgotten_and_refused(verifier: KeyVerifier) -> None:
    verifier.check("gk_a.right", {"gk_a": compiled("gk_a", "right")}, "10.0.0.1")
    assert verifier.check("gk_a.right", {}, "10.0.0.1").outcome is KeyOutcome.INVALID
    assert verifier.remembered() == (0, 0)


def test_rehashed_key_with_new_secret_needs_the_new_secret(verifier: KeyVerifier) -> None:
    record = compiled("gk_a", "old")
    assert verifier.check("gk_a.old", {"gk_a": record}, "10.0.0.1").outcome is KeyOutcome.VALID
    rotated = {"gk_a": replace(record, hash=_fast_hasher.hash("new"))}
    assert verifier.check("gk_a.old", rotated, "10.0.0.1").outcome is KeyOutcome.INVALID
    assert verifier.check("gk_a.new", rotated, "10.0.0.1").outcome is KeyOutcome.VALID


def test_expiry_is_checked_on_every_request_against_the_clock(offload: CountingOffload) -> None:
    clock = {"now": NOW}
    verifier = KeyVerifier("s", offload=offload, now=lambda: clock["now"])
    table = {"gk_a": compiled("gk_a", "right", expires_at=NOW + timedelta(seconds=30))}
    assert verifier.check("gk_a.right", table, "10.0.0.1").outcome is KeyOutcome.VALID
    clock["now"] = NOW + timedelta(seconds=30)
    verdict = verifier.check("gk_a.right", table, "10.0.0.1")
    assert verdict.outcome is KeyOutcome.EXPIRED and verdict.key is not None
    assert offload.calls == 1


def test_expired_key_with_wrong_secret_is_invalid_not_expired(verifier: KeyVerifier) -> None:
    table = {"gk_a": compiled("gk_a", "right", expires_at=NOW - timedelta(days=1))}
    assert verifier.check("gk_a.wrong", table, "10.0.0.1").outcome is KeyOutcome.INVALID


def test_failing_client_is_slowed_down_but_others_are_not(offload: CountingOffload) -> None:
    ticks = {"t": 1000.0}
    verifier = KeyVerifier(
        "s", offload=offload, failure_budget=5, failure_window_s=60, monotonic=lambda: ticks["t"], now=lambda: NOW
    )
    table = {"gk_a": compiled("gk_a", "right"), "gk_b": compiled("gk_b", "other")}
    verdicts = [verifier.check(f"gk_a.guess{i}", table, "10.0.0.66") for i in range(1000)]
    assert offload.calls == 5  # 1,000 wrong keys, five argon2 verifications
    assert all(v.outcome is KeyOutcome.INVALID for v in verdicts)
    assert verdicts[-1].retry_after_s == 60
    # Another client is unaffected, and the attacker's budget returns after the window.
    assert verifier.check("gk_b.other", table, "10.0.0.7").outcome is KeyOutcome.VALID
    ticks["t"] += 61
    assert verifier.check("gk_a.right", table, "10.0.0.66").outcome is KeyOutcome.VALID


def test_throttled_client_keeps_keys_it_already_verified(offload: CountingOffload) -> None:
    verifier = KeyVerifier("s", offload=offload, failure_budget=2, now=lambda: NOW)
    table = {"gk_a": compiled("gk_a", "right")}
    assert verifier.check("gk_a.right", table, "10.0.0.9").outcome is KeyOutcome.VALID
    for i in range(10):
        verifier.check(f"gk_a.bad{i}", table, "10.0.0.9")
    assert verifier.check("gk_a.right", table, "10.0.0.9").outcome is KeyOutcome.VALID


def test_failure_memory_is_bounded(offload: CountingOffload) -> None:
    verifier = KeyVerifier("s", offload=offload, failure_size=10, failure_budget=10_000, now=lambda: NOW)
    table = {"gk_a": compiled("gk_a", "right")}
    for i in range(50):
        verifier.check(f"gk_a.bad{i}", table, f"10.0.{i}.1")
    assert verifier.remembered() == (0, 10)


def test_concurrent_first_checks_of_one_key_share_one_verification() -> None:
    calls: list[int] = []
    gate = threading.Event()

    def slow_offload(fn: Callable[[str, str], bool], stored: str, secret: str) -> bool:
        calls.append(1)
        gate.wait(2)
        return fn(stored, secret)

    verifier = KeyVerifier("s", offload=slow_offload, now=lambda: NOW)
    table = {"gk_a": compiled("gk_a", "right")}
    results: list[KeyOutcome] = []
    threads = [
        threading.Thread(target=lambda: results.append(verifier.check("gk_a.right", table, "1.1.1.1").outcome))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    gate.set()
    for thread in threads:
        thread.join(5)
    assert results == [KeyOutcome.VALID] * 8
    assert len(calls) == 1


def test_default_offload_runs_verification_in_another_thread() -> None:
    seen: list[str] = []

    def record_thread(stored: str, secret: str) -> bool:
        seen.append(threading.current_thread().name)
        return stored == secret

    run = keys.default_offload()
    assert run(record_thread, "a", "a") is True
    assert seen and seen[0] != threading.current_thread().name


def test_concurrent_guesses_cannot_slip_past_the_failure_budget() -> None:
    calls: list[int] = []
    lock = threading.Lock()

    def slow_offload(fn: Callable[[str, str], bool], stored: str, secret: str) -> bool:
        with lock:
            calls.append(1)
        time.sleep(0.05)
        return fn(stored, secret)

    verifier = KeyVerifier("s", offload=slow_offload, failure_budget=3, now=lambda: NOW)
    table = {"gk_a": compiled("gk_a", "right")}
    threads = [threading.Thread(target=verifier.check, args=(f"gk_a.guess{i}", table, "10.6.6.6")) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(calls) == 3


def test_a_burst_of_valid_first_time_keys_from_one_address_is_queued_not_refused() -> None:
    def slow_offload(fn: Callable[[str, str], bool], stored: str, secret: str) -> bool:
        time.sleep(0.02)
        return fn(stored, secret)

    verifier = KeyVerifier("s", offload=slow_offload, failure_budget=3, now=lambda: NOW)
    table = {f"gk_{i}": compiled(f"gk_{i}", "right") for i in range(12)}
    outcomes: list[KeyOutcome] = []
    threads = [
        threading.Thread(target=lambda i=i: outcomes.append(verifier.check(f"gk_{i}.right", table, "10.0.0.2").outcome))
        for i in range(12)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert outcomes == [KeyOutcome.VALID] * 12


def test_an_expired_key_is_never_logged_as_verified(verifier: KeyVerifier, caplog: pytest.LogCaptureFixture) -> None:
    table = {
        "gk_old": compiled("gk_old", "right", expires_at=NOW - timedelta(days=1)),
        "gk_new": compiled("gk_new", "right"),
    }
    with caplog.at_level("INFO", logger="access.keys"):
        assert verifier.check("gk_old.right", table, "10.0.0.1").outcome is KeyOutcome.EXPIRED
        assert verifier.check("gk_new.right", table, "10.0.0.1").outcome is KeyOutcome.VALID
    verified = [record.getMessage() for record in caplog.records if "verified" in record.getMessage()]
    assert verified == ["API key gk_new verified"]


def test_the_guess_budget_is_per_client_and_prefix(offload: CountingOffload) -> None:
    """Eleven wrong secrets for A's prefix from one address do not lock out B's valid key from it."""
    verifier = KeyVerifier("s", offload=offload, failure_budget=10, now=lambda: NOW)
    table = {"gk_a": compiled("gk_a", "right"), "gk_b": compiled("gk_b", "other")}
    for attempt in range(11):
        verdict = verifier.check(f"gk_a.wrong{attempt}", table, "10.0.0.9")
    assert verdict.retry_after_s  # A's prefix is throttled for this address
    assert verifier.check("gk_b.other", table, "10.0.0.9").outcome is KeyOutcome.VALID
    assert verifier.check("gk_a.right", table, "10.0.0.9").outcome is KeyOutcome.INVALID  # still throttled


def test_the_client_budget_caps_hashing_over_many_prefixes(offload: CountingOffload) -> None:
    verifier = KeyVerifier("s", offload=offload, failure_budget=10, client_failure_budget=30, now=lambda: NOW)
    table = {f"gk_{n}": compiled(f"gk_{n}", "right") for n in range(10)}
    for n in range(10):
        for attempt in range(10):
            verifier.check(f"gk_{n}.wrong{attempt}", table, "10.0.0.10")
    assert offload.calls == 30  # the client's budget over all prefixes, not 10 x 10
