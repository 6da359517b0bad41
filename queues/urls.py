"""GET /api/v1/tasks/<task_id>."""

urlpatterns: list = []
