"""Helpers for admin API tests: staff users, authenticated clients, distinct client addresses."""

from __future__ import annotations

import base64
import secrets

from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

PASSWORD = "correct-horse-battery-staple-9"


ALL_ROLES = ("gateway-viewer", "gateway-editor", "gateway-key-manager")


def make_user(
    username: str = "ops", *, is_staff: bool = True, password: str = PASSWORD, roles: tuple[str, ...] | None = None
) -> User:
    """Create a user (staff by default) with ``password``, in ``roles`` (a staff user: every role)."""
    from django.contrib.auth.models import Group

    user = User.objects.create_user(username, password=password, is_staff=is_staff)
    wanted = (ALL_ROLES if is_staff else ()) if roles is None else roles
    user.groups.set(Group.objects.filter(name__in=wanted))
    return user


def basic_header(username: str, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def token_header(user: User) -> str:
    return f"Token {Token.objects.get_or_create(user=user)[0].key}"


def unique_ip() -> str:
    """Return a fresh client address, so login-failure counts of different tests never meet."""
    return "10.{}.{}.{}".format(*secrets.token_bytes(3))


def client_for(user: User | None = None, *, authorization: str | None = None, ip: str | None = None) -> APIClient:
    """Return an APIClient: forced-authenticated as ``user``, or sending ``authorization``."""
    client = APIClient(REMOTE_ADDR=ip or unique_ip())
    if user is not None:
        client.force_authenticate(user)
    if authorization is not None:
        client.credentials(HTTP_AUTHORIZATION=authorization)
    return client


FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def use_fast_password_hashing(request, settings) -> None:  # type: ignore[no-untyped-def]  # pytest fixtures
    """Hash test passwords with MD5 (argon2 makes every login ~0.1 s), except for live servers.

    A live gunicorn reads the real settings, which only verify argon2/PBKDF2/bcrypt hashes.
    """
    if "gateway_server" not in request.fixturenames:
        settings.PASSWORD_HASHERS = FAST_HASHERS
