"""Default ``execution`` handler: POST the task to the service named by EXECUTION_SERVICE.

The target is found through the gateway's own routing data: the service's
``current_version`` when that version is active, else its ``default_url``; the path is
the service's upstream prefix plus the path the queue route forwarded (the message's
``path``), and ``GATEWAY_SERVICE_KEY_<NAME>`` is sent as ``X-Service-Key``.
"""

from __future__ import annotations

from gateway_core.conf import gateway_config
from queues.handlers.base import PermanentError, TaskInput, post_json
from routing.models import ServiceConfig, ServiceVersion

EXECUTION_TIMEOUT_S = 300.0


def handle(task: TaskInput) -> object:
    """Return the execution service's JSON answer."""
    config = gateway_config()
    name = config.execution_service
    service = ServiceConfig.objects.filter(service_name=name, is_active=True).first()
    if service is None:
        raise PermanentError(f"execution service {name!r} is not configured or inactive")
    base_url = service.default_url
    if service.current_version:
        versions = ServiceVersion.objects.filter(service=service, is_active=True)
        version = versions.filter(version=service.current_version).first()
        if version is not None:
            base_url = version.url
    if not base_url.startswith(("http://", "https://")):
        raise PermanentError(f"execution service {name!r} is not an HTTP upstream")
    prefix = service.route_prefix if service.upstream_prefix is None else service.upstream_prefix
    url = base_url.rstrip("/") + prefix + task.path
    if task.query:
        url += "?" + task.query
    headers = {}
    key = config.service_keys.get(name.upper().replace("-", "_"))
    if key:
        headers["X-Service-Key"] = key
    if task.application_id:
        headers["X-Consumer-ID"] = task.application_id
    return post_json(url, task.body, task=task, timeout_s=EXECUTION_TIMEOUT_S, headers=headers)
