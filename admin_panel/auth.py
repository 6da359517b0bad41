"""Brute-force resistance for staff logins: failed attempts are limited per client IP.

The admin API is reachable on the public port by default, so password guessing is
limited for HTTP Basic, ``Authorization: Token`` and the admin UI's login form alike.
Failures are counted per client IP in the default cache (Redis when ``REDIS_URL`` is
set, so every worker and node shares the count). Once an address reaches
``GATEWAY_ADMIN_LOGIN_MAX_FAILURES`` (default 10) failures within
``GATEWAY_ADMIN_LOGIN_WINDOW_S`` (default 60 s) of its first one, every login from it
is refused for the next window, correct credentials included: 429 with
``Retry-After`` on the API, a form error (status 429) in the UI. 0 turns the limit off.
When the shared cache cannot be reached, logins are not limited (fail open, logged),
like the gateway's rate limits by default: locking every admin out is the worse failure.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from functools import cache
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import REDIRECT_FIELD_NAME, get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.hashers import check_password, make_password
from django.contrib.auth.signals import user_login_failed
from django.contrib.auth.views import LoginView
from django.core.cache import BaseCache
from django.core.cache import cache as default_cache
from django.db import connections, router
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from rest_framework.authentication import BasicAuthentication, TokenAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.request import Request

from gateway_core.client_ip import client_ip_for
from gateway_core.conf import gateway_config

CACHE_PREFIX = "admin-login-failures"
logger = logging.getLogger("gateway.admin_auth")


class LoginGuard:
    """Count failed logins per client IP; lock an address out for ``window_s`` at ``max_failures``.

    Failures are counted from an address's first failure for ``window_s``; reaching
    ``max_failures`` locks the address for ``window_s`` from that last failure.
    ``clock`` returns seconds (``time.time``); tests swap it.
    """

    def __init__(
        self,
        *,
        max_failures: int,
        window_s: int,
        store: BaseCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = max(1, window_s)
        self.store = store if store is not None else default_cache
        self.clock = clock

    def retry_after_s(self, client_ip: str) -> int | None:
        """Return the seconds ``client_ip`` must wait before another login, or None when it may try."""
        if self.max_failures <= 0:
            return None
        try:
            locked_until = self.store.get(f"{CACHE_PREFIX}:locked:{client_ip}")
        except Exception as exc:  # the shared cache is down: let staff log in (fail open)
            logger.warning("login throttling unavailable: %s", type(exc).__name__)
            return None
        now = self.clock()
        if locked_until is None or locked_until <= now:
            return None
        return max(1, math.ceil(locked_until - now))

    def record_failure(self, client_ip: str) -> None:
        """Count one failed login from ``client_ip``; lock it out when that reaches the limit."""
        if self.max_failures <= 0:
            return
        try:
            self._count(client_ip)
        except Exception as exc:  # the shared cache is down: the failure goes uncounted
            logger.warning("login throttling unavailable: %s", type(exc).__name__)

    def _count(self, client_ip: str) -> None:
        key = f"{CACHE_PREFIX}:count:{client_ip}"
        # add() then incr(): atomic on Redis; the count expires window_s after the first failure.
        self.store.add(key, 0, timeout=self.window_s)
        try:
            failures = self.store.incr(key)
        except ValueError:  # expired between add() and incr()
            self.store.add(key, 1, timeout=self.window_s)
            failures = 1
        if failures >= self.max_failures:
            self.store.set(f"{CACHE_PREFIX}:locked:{client_ip}", self.clock() + self.window_s, timeout=self.window_s)
            self.store.delete(key)


@cache
def login_guard() -> LoginGuard:
    """Return the process's LoginGuard, configured once from settings (tests call ``cache_clear``)."""
    from django.conf import settings

    return LoginGuard(
        max_failures=int(getattr(settings, "ADMIN_LOGIN_MAX_FAILURES", 10)),
        window_s=int(getattr(settings, "ADMIN_LOGIN_WINDOW_S", 60)),
    )


def client_ip(request: HttpRequest) -> str:
    """Return the client IP: the socket peer, or X-Forwarded-For from a trusted proxy."""
    return client_ip_for(
        request.META.get("REMOTE_ADDR", ""),
        request.META.get("HTTP_X_FORWARDED_FOR"),
        gateway_config().trusted_proxies,
    )


# --- The admin API: DRF authentication classes -------------------------------------------


class _GuardedAuthentication:
    """Refuse a client over the failure limit before checking its credentials; count failures."""

    scheme = b""

    def authenticate(self, request: Request) -> tuple[object, object] | None:
        auth = get_authorization_header(request).split()
        if not auth or auth[0].lower() != self.scheme:
            return super().authenticate(request)  # type: ignore[misc]  # not ours: None
        guard, address = login_guard(), client_ip(request)
        wait_s = guard.retry_after_s(address)
        if wait_s is not None:
            # DRF appends "Expected available in N seconds." to the detail.
            raise Throttled(wait=wait_s, detail="Too many failed logins from your address.")
        try:
            return super().authenticate(request)  # type: ignore[misc]  # BasicAuthentication / TokenAuthentication
        except AuthenticationFailed:
            guard.record_failure(address)
            raise


class ThrottledBasicAuthentication(_GuardedAuthentication, BasicAuthentication):
    """HTTP Basic for staff, with failed logins limited per client IP, the password hashed off the event loop.

    Django's ModelBackend would hash (argon2, ~100 ms of CPU) inside the gevent worker,
    stalling every proxied request it serves meanwhile (SPEC §7). The user is looked
    up here, as ModelBackend does, and only the hashing runs in a small native thread
    pool (``password_hashing``); an unknown user costs the same hashing, so timing
    does not tell which users exist.
    """

    scheme = b"basic"

    def authenticate_credentials(
        self, userid: str, password: str, request: Request | None = None
    ) -> tuple[object, None]:
        user = _verified_user(userid, password, request)
        if user is None:
            raise AuthenticationFailed("Invalid username/password.")
        if not user.is_active:
            raise AuthenticationFailed("User inactive or deleted.")
        return (user, None)


def _verified_user(username: str, password: str, request: Request | None) -> AbstractBaseUser | None:
    """Return the user whose password ``password`` is, or None (and signal ``user_login_failed``)."""
    user_model = get_user_model()
    run = password_hashing()
    try:
        user = user_model._default_manager.get_by_natural_key(username)
    except user_model.DoesNotExist:
        user = None
    _give_back_pooled_connection(router.db_for_read(user_model))
    if user is None:
        run(make_password, password)  # as ModelBackend: the same work whether the user exists or not
    else:
        upgrade: list[str] = []
        if not run(check_password, password, user.password, upgrade.append):
            user = None
        elif upgrade:  # a hash from an older hasher or cost: store the current one
            user.password = run(make_password, password)
            user.save(update_fields=["password"])
    if user is None:
        user_login_failed.send(sender=__name__, credentials={"username": username}, request=request)
    return user


def _give_back_pooled_connection(alias: str) -> None:
    """Return ``alias``'s pooled connection while the password hashes (tens of ms of argon2).

    A process has few pooled connections (``GATEWAY_DB_POOL_SIZE``); holding one idle
    through the hashing made concurrent Basic-auth calls wait for each other's hashes and
    answer 503 once the pool's timeout passed. The next query takes one from the pool
    again. A connection inside a transaction, or one not from a pool, is left alone.
    """
    connection = connections[alias]
    pooled = getattr(connection, "pool", None) is not None
    if pooled and connection.connection is not None and not connection.in_atomic_block:
        connection.close()  # with a pool: back to it


Hashing = Callable[..., Any]


@cache
def password_hashing() -> Hashing:
    """Return ``run(fn, *args)``: call ``fn`` in a 2-thread native pool and wait for it without blocking the loop.

    Under gevent workers (threads are greenlets there) this is gevent's native
    ``ThreadPool``, so the waiting greenlet yields while argon2 (which releases the
    GIL) hashes; elsewhere a ``ThreadPoolExecutor`` bounds the CPU spent on logins.
    """
    try:
        from gevent import monkey

        patched = monkey.is_module_patched("threading")
    except ImportError:  # pragma: no cover - gevent is a runtime dependency
        patched = False
    if patched:
        from gevent.threadpool import ThreadPool

        pool = ThreadPool(2)
        return lambda fn, *args: pool.apply(fn, args)
    from concurrent.futures import ThreadPoolExecutor

    executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="password-hashing")
    return lambda fn, *args: executor.submit(fn, *args).result()


class ThrottledTokenAuthentication(_GuardedAuthentication, TokenAuthentication):
    """``Authorization: Token <key>`` (DRF authtoken), with failed logins limited per client IP."""

    scheme = b"token"


# --- The admin UI: the login form ----------------------------------------------------------


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin's login form, refusing a client over the failure limit with a clear message."""

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "too_many_failures": "Too many failed logins from your address. Try again in %(wait_s)s seconds.",
    }

    def clean(self) -> dict[str, object]:
        guard, address = login_guard(), client_ip(self.request)
        wait_s = guard.retry_after_s(address)
        if wait_s is not None:
            raise forms.ValidationError(
                self.error_messages["too_many_failures"], code="too_many_failures", params={"wait_s": wait_s}
            )
        try:
            return super().clean()
        except forms.ValidationError:
            guard.record_failure(address)
            raise


@never_cache
def admin_login(request: HttpRequest) -> HttpResponse:
    """The admin site's login view, with ThrottledAdminAuthenticationForm (mounted at /admin/login/)."""
    site = admin.site
    if request.method == "GET" and site.has_permission(request):
        return HttpResponseRedirect(reverse("admin:index", current_app=site.name))
    context = {
        **site.each_context(request),
        "title": _("Log in"),
        "subtitle": None,
        "app_path": request.get_full_path(),
        "username": request.user.get_username(),
    }
    if REDIRECT_FIELD_NAME not in request.GET and REDIRECT_FIELD_NAME not in request.POST:
        context[REDIRECT_FIELD_NAME] = reverse("admin:index", current_app=site.name)
    request.current_app = site.name
    view = LoginView.as_view(
        extra_context=context,
        authentication_form=ThrottledAdminAuthenticationForm,
        template_name=site.login_template or "admin/login.html",
    )
    response = view(request)
    form = getattr(response, "context_data", {}).get("form") if hasattr(response, "context_data") else None
    if form is not None and any(e.code == "too_many_failures" for e in form.non_field_errors().as_data()):
        response.status_code = 429
    return response
