"""The admin REST API (SPEC §7), mounted under /admin/ on both ports."""

urlpatterns: list = []
