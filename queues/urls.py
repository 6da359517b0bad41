"""GET /api/v1/tasks/<task_id> (included under ``api/v1/tasks/`` by gateway_project.urls)."""

from django.urls import path

from queues.views import task_status

urlpatterns = [
    path("<str:task_id>", task_status, name="task-status"),
]
