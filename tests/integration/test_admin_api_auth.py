"""Admin API access: staff only on both URLconfs, and failed logins limited per client IP."""

from __future__ import annotations

import pytest
import requests
from django.core.cache import caches
from django.test import Client

from admin_panel.auth import LoginGuard, login_guard
from tests.support.admin_api import (
    PASSWORD,
    basic_header,
    client_for,
    make_user,
    token_header,
    unique_ip,
    use_fast_password_hashing,
)

SERVICES = "/admin/routing/services"
URLCONFS = ["gateway_project.urls", "admin_panel.urls"]  # port 4200 and port 4201


@pytest.fixture(autouse=True)
def _fast_hashing(request, settings) -> None:
    use_fast_password_hashing(request, settings)


@pytest.fixture(params=URLCONFS)
def urlconf(request, settings) -> str:
    settings.ROOT_URLCONF = request.param
    return request.param


@pytest.fixture
def fresh_guard():
    """A LoginGuard built from the current settings, forgotten afterwards."""
    login_guard.cache_clear()
    yield login_guard()
    login_guard.cache_clear()


# --- Who may call -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_anonymous_gets_401_with_a_basic_challenge(urlconf) -> None:
    response = client_for().get(SERVICES)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Basic")
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.django_db
@pytest.mark.parametrize("scheme", ["basic", "token"])
def test_non_staff_gets_403_and_staff_gets_200(urlconf, scheme) -> None:
    staff, user = make_user("ops"), make_user("someone", is_staff=False)
    header = basic_header if scheme == "basic" else (lambda name: token_header({"ops": staff, "someone": user}[name]))
    denied = client_for(authorization=header("someone")).get(SERVICES)
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "permission_denied"
    allowed = client_for(authorization=header("ops")).get(SERVICES)
    assert allowed.status_code == 200
    assert allowed.json() == []


@pytest.mark.django_db
def test_wrong_password_and_unknown_token_get_401(urlconf) -> None:
    make_user("ops")
    assert client_for(authorization=basic_header("ops", "wrong")).get(SERVICES).status_code == 401
    assert client_for(authorization="Token 0123456789abcdef").get(SERVICES).status_code == 401
    assert client_for(authorization="Basic !!!not-base64").get(SERVICES).status_code == 401


@pytest.mark.django_db
def test_schema_is_staff_only_too(urlconf) -> None:
    make_user("ops")
    assert client_for().get("/admin/schema").status_code == 401
    schema = client_for(authorization=basic_header("ops")).get("/admin/schema")
    assert schema.status_code == 200
    assert schema.json()["openapi"].startswith("3.")
    assert "/admin/routing/services/{service_name}/versions/{version}" in schema.json()["paths"]


# --- Brute-force resistance: the API --------------------------------------------------------------


@pytest.mark.django_db
def test_eleventh_failed_login_from_one_address_gets_429_even_with_the_right_password(fresh_guard) -> None:
    make_user("ops")
    ip = unique_ip()
    for _ in range(10):
        assert client_for(authorization=basic_header("ops", "guess"), ip=ip).get(SERVICES).status_code == 401
    refused = client_for(authorization=basic_header("ops"), ip=ip).get(SERVICES)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "throttled"
    assert 1 <= int(refused["Retry-After"]) <= 60
    token_refused = client_for(authorization="Token whatever", ip=ip).get(SERVICES)
    assert token_refused.status_code == 429
    # Another address is not affected; requests without credentials are not counted.
    assert client_for(authorization=basic_header("ops")).get(SERVICES).status_code == 200


@pytest.mark.django_db
def test_token_failures_count_too(fresh_guard) -> None:
    user = make_user("ops")
    ip = unique_ip()
    for _ in range(10):
        assert client_for(authorization="Token bad", ip=ip).get(SERVICES).status_code == 401
    assert client_for(authorization=token_header(user), ip=ip).get(SERVICES).status_code == 429


@pytest.mark.django_db
def test_successful_logins_are_not_counted(fresh_guard) -> None:
    make_user("ops")
    ip = unique_ip()
    for _ in range(15):
        assert client_for(authorization=basic_header("ops"), ip=ip).get(SERVICES).status_code == 200


def test_guard_locks_for_one_window_and_zero_disables_it() -> None:
    now = [1_000.0]
    store = caches["default"]
    guard = LoginGuard(max_failures=2, window_s=60, store=store, clock=lambda: now[0])
    ip = unique_ip()
    guard.record_failure(ip)
    assert guard.retry_after_s(ip) is None
    now[0] = 1_010.0
    guard.record_failure(ip)
    assert guard.retry_after_s(ip) == 60  # locked until 1070
    now[0] = 1_050.0
    assert guard.retry_after_s(ip) == 20
    now[0] = 1_071.0
    assert guard.retry_after_s(ip) is None
    off = LoginGuard(max_failures=0, window_s=60, store=store, clock=lambda: now[0])
    for _ in range(5):
        off.record_failure(ip)
    assert off.retry_after_s(ip) is None


# --- Brute-force resistance: the admin UI login form --------------------------------------------


@pytest.mark.django_db
def test_admin_login_form_is_limited_with_a_clear_message(settings, fresh_guard) -> None:
    settings.ROOT_URLCONF = "admin_panel.urls"
    make_user("ops")
    client = Client(REMOTE_ADDR=unique_ip())
    form = {"username": "ops", "password": "guess", "next": "/admin/"}
    for _ in range(10):
        response = client.post("/admin/login/", form)
        assert response.status_code == 200
        assert b"Please enter the correct username and password" in response.content
    locked = client.post("/admin/login/", {**form, "password": PASSWORD})
    assert locked.status_code == 429
    assert b"Too many failed logins from your address" in locked.content
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_admin_login_form_still_logs_staff_in(settings, fresh_guard) -> None:
    settings.ROOT_URLCONF = "admin_panel.urls"
    make_user("ops")
    client = Client(REMOTE_ADDR=unique_ip())
    assert client.get("/admin/login/").status_code == 200
    response = client.post("/admin/login/", {"username": "ops", "password": PASSWORD, "next": "/admin/"})
    assert response.status_code == 302
    assert client.session["_auth_user_id"]


# --- Through real gunicorn ------------------------------------------------------------------------


def test_live_admin_panel_and_gateway_enforce_staff_only(gateway_server) -> None:
    staff, user = make_user("ops"), make_user("someone", is_staff=False)
    token = token_header(staff)
    for app in ("admin_panel.wsgi:application", "gateway_project.wsgi:application"):
        server = gateway_server(app=app)
        url = server.url + SERVICES
        anonymous = requests.get(url, timeout=10)
        assert anonymous.status_code == 401, server.log()
        assert anonymous.json()["error"]["code"] == "not_authenticated"
        assert requests.get(url, auth=("someone", PASSWORD), timeout=10).status_code == 403
        assert requests.get(url, auth=("ops", PASSWORD), timeout=10).status_code == 200
        created = requests.post(
            url,
            json={"service_name": f"svc-{app[:5]}", "default_url": "http://127.0.0.1:9"},
            headers={"Authorization": token},
            timeout=10,
        )
        assert created.status_code == 201, created.text
    assert user.is_staff is False


def test_live_gateway_without_the_admin_api_on_the_public_port(gateway_server) -> None:
    make_user("ops")
    server = gateway_server(env={"GATEWAY_ADMIN_API_ON_PUBLIC_PORT": "false"})
    response = requests.get(server.url + SERVICES, auth=("ops", PASSWORD), timeout=10)
    assert response.status_code == 404


class BrokenCache:
    """A cache whose server is down: every call raises, as RedisCache does."""

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]  # any cache method
        def fail(*args: object, **kwargs: object) -> None:
            raise ConnectionError("cache down")

        return fail


def test_guard_fails_open_when_the_cache_is_down() -> None:
    guard = LoginGuard(max_failures=1, window_s=60, store=BrokenCache())  # type: ignore[arg-type]  # a stand-in
    guard.record_failure("10.0.0.1")
    assert guard.retry_after_s("10.0.0.1") is None
