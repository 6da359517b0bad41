"""Minimal Django project for the two reference proxies of the benchmark (not the gateway).

- ``/api/v1/bench/...``: a bare Django view forwarding with a tuned ``requests`` Session;
- ``/revproxy/...``: django-revproxy's ``ProxyView``.
Both send to ``BENCH_UPSTREAM``. No middleware: the leanest Django these can be.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "var" / "bench-site"))

SECRET_KEY = "bench-only-not-a-secret"  # noqa: S105 - a throwaway benchmark process
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS: list[str] = []
if (Path(__file__).resolve().parents[1] / "var" / "bench-site" / "revproxy").is_dir():
    INSTALLED_APPS.append("revproxy")  # its AppConfig fills in its default options
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.reference_urls"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
BENCH_UPSTREAM = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:7999")
