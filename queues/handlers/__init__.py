"""Default queue handlers: plain functions ``handle(task: TaskInput) -> result``.

A handler raises :class:`~queues.handlers.base.InvalidPayload` for a body that can
never succeed (no retry), :class:`~queues.handlers.base.PermanentError` for another
final failure, and anything else (including
:class:`~queues.handlers.base.TransientError`) to be retried with backoff.
"""
