"""URL of the traffic dashboard page in the admin (issue 7)."""

urlpatterns: list = []
