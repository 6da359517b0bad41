"""The catch-all /api/v1/... route into the request pipeline."""

urlpatterns: list = []
