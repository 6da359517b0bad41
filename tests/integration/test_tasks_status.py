"""Task status records: expiry after GATEWAY_TASK_TTL_HOURS and the idempotency window."""

from __future__ import annotations

import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from queues.models import TaskStatus
from queues.services import task_create, task_discard, task_start, tasks_delete_expired

pytestmark = pytest.mark.django_db


def make_task(**fields: object) -> TaskStatus:
    task, created = task_create(
        task_id=str(uuid.uuid4()),
        queue="email",
        application_id=fields.pop("application_id", None),
        request_id="r",
        **fields,
    )
    assert created
    return task


def age(task: TaskStatus, hours: float) -> None:
    past = timezone.now() - timedelta(hours=hours)
    TaskStatus.objects.filter(pk=task.pk).update(created_at=past, updated_at=past)


def test_records_older_than_the_ttl_are_deleted_and_newer_ones_kept() -> None:
    old, recent = make_task(), make_task()
    age(old, 73)
    age(recent, 71)

    assert tasks_delete_expired(ttl_hours=72) == 1

    assert [str(pk) for pk in TaskStatus.objects.values_list("pk", flat=True)] == [str(recent.pk)]


def test_cleanup_command_uses_gateway_task_ttl_hours() -> None:
    old = make_task()
    age(old, 24 * 30)
    out = StringIO()

    call_command("gateway_tasks_cleanup", stdout=out)

    assert "Deleted 1 expired task record" in out.getvalue()
    assert not TaskStatus.objects.exists()


def test_idempotency_key_returns_the_first_task_within_the_window() -> None:
    app_id = str(uuid.uuid4())
    since = timezone.now() - timedelta(hours=24)
    first = make_task(application_id=app_id, idempotency_key="k" * 64, idempotency_since=since)

    again, created = task_create(
        task_id=str(uuid.uuid4()),
        queue="email",
        application_id=app_id,
        request_id="r2",
        idempotency_key="k" * 64,
        idempotency_since=since,
    )

    assert (str(again.pk), created) == (str(first.pk), False)
    assert TaskStatus.objects.count() == 1


def test_idempotency_key_is_free_again_after_the_window() -> None:
    app_id = str(uuid.uuid4())
    first = make_task(application_id=app_id, idempotency_key="k" * 64)
    age(first, 25)

    again, created = task_create(
        task_id=str(uuid.uuid4()),
        queue="email",
        application_id=app_id,
        request_id="r2",
        idempotency_key="k" * 64,
        idempotency_since=timezone.now() - timedelta(hours=24),
    )

    assert created
    assert again.pk != first.pk
    first.refresh_from_db()
    assert first.idempotency_key is None


def test_a_discarded_task_is_never_started() -> None:
    task = make_task()
    task_discard(task_id=str(task.pk))

    started = task_start(task_id=str(task.pk), queue="email", application_id=None, request_id="r", create_missing=False)

    assert started is None
    assert not TaskStatus.objects.exists()


def test_a_finished_task_is_not_started_again() -> None:
    task = make_task()
    TaskStatus.objects.filter(pk=task.pk).update(status="succeeded")

    assert (
        task_start(task_id=str(task.pk), queue="email", application_id=None, request_id="r", create_missing=True)
        is None
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("outcome", ["confirmed", "discarded"])
def test_idempotent_replay_waits_until_the_first_publish_is_settled(outcome: str) -> None:
    """A replay must not answer 202 for a task whose publish may still fail."""
    import threading
    import time

    from django.db import connection

    from queues.producer import _confirmed
    from queues.services import task_confirmed

    first = make_task(application_id=str(uuid.uuid4()), idempotency_key="k" * 64)

    def settle() -> None:
        time.sleep(0.3)
        if outcome == "confirmed":
            task_confirmed(task_id=str(first.pk))
        else:
            task_discard(task_id=str(first.pk))
        connection.close()

    threading.Thread(target=settle).start()
    started = time.monotonic()
    replay = _confirmed(TaskStatus.objects.get(pk=first.pk))

    assert time.monotonic() - started >= 0.25
    if outcome == "confirmed":
        assert replay is not None
        assert str(replay.pk) == str(first.pk)
    else:
        assert replay is None


def test_replay_of_a_task_never_published_discards_it() -> None:
    from queues.producer import _confirmed

    orphan = make_task(application_id=str(uuid.uuid4()), idempotency_key="k" * 64)
    age(orphan, 1)

    assert _confirmed(TaskStatus.objects.get(pk=orphan.pk)) is None
    assert not TaskStatus.objects.exists()
