"""Incremental compile: a snapshot kept up to date by applying changed rows equals a full compile."""

from __future__ import annotations

import contextlib
import random
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from access.models import ApiKey, Application, EndpointWhitelist
from gateway_core import snapshot
from gateway_core.snapshot import Snapshot
from routing import compiler, reload
from routing.models import ServiceConfig, ServiceVersion
from tests.support.builders import make_app, make_entry, make_key, make_service, make_version

pytestmark = pytest.mark.django_db

PATHS = ("/api/v1/s{n}/*", "/api/v1/s{n}/items", "/api/v1/s{n}/items/{{id}}", "/api/v1/*", "/api/v1/s{n}")
METHOD_SETS = ([], ["GET"], ["GET", "HEAD"], ["POST"])


def comparable(snap: Snapshot) -> dict[str, object]:
    """Everything a request reads from a snapshot (not its label or load time)."""
    return {
        "routes": snap.routes,
        "routes_by_prefix": dict(snap.routes_by_prefix),
        "applications": dict(snap.applications),
        "keys": dict(snap.keys),
        "public_entries": snap.public_entries,
        "counts": dict(snap.counts),
    }


def differences(left: Snapshot, right: Snapshot) -> list[str]:
    """Name the records that differ between two snapshots (for a readable failure)."""
    out: list[str] = []
    a, b = comparable(left), comparable(right)
    for part, value in a.items():
        other = b[part]
        if value == other:
            continue
        if isinstance(value, dict) and isinstance(other, dict):
            out += [f"{part}[{n}]" for n in sorted(set(value) | set(other)) if value.get(n) != other.get(n)]
        else:
            out.append(part)
    return out


class FullCompiles:
    """Count the whole-config compiles ``reload`` runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        monkeypatch.setattr(reload, "compile_snapshot", self)

    def __call__(self, version: int) -> Snapshot:
        self.count += 1
        return compiler.compile_snapshot(version)


class RandomEditor:
    """Random admin-like edits of every config table, each saved through the ORM like the admin does."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.serial = 0

    def _next(self) -> int:
        self.serial += 1
        return self.serial

    def _pick(self, model):  # type: ignore[no-untyped-def]  # a model class
        ids = list(model.objects.values_list("id", flat=True))
        return model.objects.get(id=self.rng.choice(ids)) if ids else None

    def edit(self) -> str:
        action = self.rng.choice(
            [
                self.add_service,
                self.change_service,
                self.delete_service,
                self.add_version,
                self.change_version,
                self.delete_version,
                self.add_app,
                self.change_app,
                self.delete_app,
                self.add_entry,
                self.change_entry,
                self.delete_entry,
                self.add_key,
                self.change_key,
                self.delete_key,
            ]
        )
        action()
        return action.__name__

    def add_service(self) -> None:
        n = self._next()
        make_service(f"s{n}", f"http://s{n}:80", versions=[("v1", f"http://s{n}-v1:80", self.rng.randint(0, 5))])

    def change_service(self) -> None:
        service = self._pick(ServiceConfig)
        if service is None:
            return self.add_service()
        field = self.rng.choice(["default_url", "is_active", "route_prefix", "current_version", "upstream_prefix"])
        if field == "default_url":
            service.default_url = f"http://changed{self._next()}:80"
        elif field == "is_active":
            service.is_active = not service.is_active
        elif field == "route_prefix":
            service.route_prefix = f"/api/v1/moved{self._next()}"
        elif field == "current_version":
            service.current_version = self.rng.choice([None, "v1", "v2"])
        else:
            service.upstream_prefix = self.rng.choice([None, "", "/internal"])
        service.full_clean()
        service.save()
        return None

    def delete_service(self) -> None:
        service = self._pick(ServiceConfig)
        if service is not None:
            service.delete()

    def add_version(self) -> None:
        service = self._pick(ServiceConfig)
        if service is None:
            return self.add_service()
        make_version(service, f"v{self._next() + 1}", "http://added:80", self.rng.randint(0, 3))
        return None

    def change_version(self) -> None:
        version = self._pick(ServiceVersion)
        if version is None:
            return self.add_version()
        if self.rng.random() < 0.5:
            version.weight = self.rng.randint(0, 10)
        else:
            version.is_active = not version.is_active
        version.save()
        return None

    def delete_version(self) -> None:
        version = self._pick(ServiceVersion)
        if version is not None:
            version.delete()

    def add_app(self) -> None:
        n = self._next()
        app = make_app(f"app{n}", allowed_services=self.rng.choice([[], [f"s{n}"]]))
        for _ in range(self.rng.randint(0, 3)):
            self._entry(app)
        for _ in range(self.rng.randint(0, 2)):
            make_key(app, name=f"k{self._next()}")

    def change_app(self) -> None:
        app = self._pick(Application)
        if app is None:
            return self.add_app()
        field = self.rng.choice(["is_active", "allowed_versions", "allowed_origins"])
        if field == "is_active":
            app.is_active = not app.is_active
        elif field == "allowed_versions":
            app.allowed_versions = self.rng.choice([[], ["v1"], ["v1", "default"]])
        else:
            app.allowed_origins = self.rng.choice([[], ["https://a.example"]])
        app.save()
        return None

    def delete_app(self) -> None:
        app = self._pick(Application)
        if app is not None:
            app.delete()

    def _entry(self, app: Application) -> None:
        path = self.rng.choice(PATHS).format(n=self._next())
        with contextlib.suppress(ValidationError):  # the application has that path already
            make_entry(
                app,
                path,
                methods=self.rng.choice(METHOD_SETS),
                rate_limit=self.rng.choice([None, 10, 60]),
                is_public=self.rng.random() < 0.3,
            )

    def add_entry(self) -> None:
        app = self._pick(Application)
        if app is None:
            return self.add_app()
        self._entry(app)
        return None

    def change_entry(self) -> None:
        entry = self._pick(EndpointWhitelist)
        if entry is None:
            return self.add_entry()
        field = self.rng.choice(["is_public", "rate_limit", "allowed_methods", "endpoint_path", "application"])
        if field == "is_public":
            entry.is_public = not entry.is_public
        elif field == "rate_limit":
            entry.rate_limit = self.rng.choice([None, 5, 100])
        elif field == "allowed_methods":
            entry.allowed_methods = self.rng.choice(METHOD_SETS)
        elif field == "endpoint_path":
            entry.endpoint_path = self.rng.choice(PATHS).format(n=self._next())
        else:
            entry.application = self._pick(Application)  # moved to another application
        with contextlib.suppress(ValidationError):  # a duplicate path: nothing saved
            entry.full_clean()
            entry.save()
        return None

    def delete_entry(self) -> None:
        entry = self._pick(EndpointWhitelist)
        if entry is not None:
            entry.delete()

    def add_key(self) -> None:
        app = self._pick(Application)
        if app is None:
            return self.add_app()
        make_key(app, name=f"k{self._next()}")
        return None

    def change_key(self) -> None:
        key = self._pick(ApiKey)
        if key is None:
            return self.add_key()
        if self.rng.random() < 0.5:
            key.is_active = False
        else:
            key.expires_at = timezone.now() + timedelta(days=self.rng.randint(1, 9))
        key.save()
        return None

    def delete_key(self) -> None:
        key = self._pick(ApiKey)
        if key is not None:
            key.delete()


@pytest.fixture(autouse=True)
def _cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys are created by the hundred here; their hash strength is not what is tested."""
    from argon2 import PasswordHasher

    from access import keys

    monkeypatch.setattr(keys, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_an_incrementally_maintained_snapshot_equals_a_full_compile(
    seed: int, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks
) -> None:
    """After every random change (and batch of changes in one transaction) the two agree exactly."""
    rng = random.Random(seed)
    editor = RandomEditor(rng)
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(4):
            editor.add_service()
            editor.add_app()
    reload.refresh(force=True)
    full = FullCompiles(monkeypatch)
    applied = []
    for _ in range(60):
        before = snapshot.current()
        before_view = comparable(before)
        with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
            applied += [editor.edit() for _ in range(rng.choice([1, 1, 1, 2, 4]))]
        after = snapshot.current()
        assert after.version == reload.revision_read()
        assert differences(after, compiler.compile_snapshot(after.version)) == [], applied[-4:]
        assert comparable(before) == before_view, "the snapshot in force was modified in place"
    assert full.count == 0, "every change was applied, none needed a full compile"
    assert len(set(applied)) >= 12  # the sequence really exercised most kinds of edit


def test_unchanged_records_are_shared_with_the_previous_snapshot(django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        service = make_service("kept", "http://kept:80")
        make_service("edited", "http://edited:80")
        app = make_app("keyed", entries=[{"path": "/api/v1/kept/*"}])
        key, _ = make_key(app)
    reload.refresh(force=True)
    before = snapshot.current()
    with django_capture_on_commit_callbacks(execute=True):
        ServiceConfig.objects.get(service_name="edited").delete()
    after = snapshot.current()
    assert "/api/v1/edited" not in after.routes_by_prefix
    assert after.routes_by_prefix["/api/v1/kept"] is before.routes_by_prefix[f"/api/v1/{service.service_name}"]
    assert after.keys is before.keys  # no key changed: the whole table is shared
    assert after.applications is before.applications
    assert after.keys[key.key_prefix] is before.keys[key.key_prefix]


def test_a_reload_that_names_no_rows_compiles_everything(
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        make_service("any", "http://any:80")
    reload.refresh(force=True)
    full = FullCompiles(monkeypatch)
    reload.reload_now()  # gateway_reload, the admin's refresh
    assert full.count == 1


def test_a_snapshot_from_another_history_is_compiled_afresh(
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks
) -> None:
    """A restored database reuses version numbers: its changes must not be applied to a foreign snapshot."""
    with django_capture_on_commit_callbacks(execute=True):
        make_service("here", "http://here:80")
    reload.refresh(force=True)
    installed = snapshot.current()
    snapshot.install(Snapshot(**{**{f: getattr(installed, f) for f in installed.__slots__}, "lineage": "f" * 32}))
    full = FullCompiles(monkeypatch)
    with django_capture_on_commit_callbacks(execute=True):
        make_service("there", "http://there:80")
    assert full.count == 1
    assert {"/api/v1/here", "/api/v1/there"} <= set(snapshot.current().routes_by_prefix)


def test_a_worker_further_behind_than_the_kept_history_compiles_everything(
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks
) -> None:
    reload.refresh(force=True)
    monkeypatch.setattr(reload, "KEEP_CHANGE_VERSIONS", 2)
    stale = snapshot.current()
    for name in ("a1", "a2", "a3"):
        with django_capture_on_commit_callbacks(execute=True):
            make_service(name, f"http://{name}:80")
    snapshot.install(stale)
    full = FullCompiles(monkeypatch)
    assert reload.refresh() is True
    assert full.count == 1
    assert {"/api/v1/a1", "/api/v1/a2", "/api/v1/a3"} <= set(snapshot.current().routes_by_prefix)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_the_entry_index_finds_exactly_the_entries_a_full_scan_finds(seed: int) -> None:
    """For random patterns and paths, the index's candidates hold every match, in the same order."""
    from gateway_core.patterns import compile_pattern
    from gateway_core.snapshot import CompiledEntry

    rng = random.Random(seed)
    words = ["api", "v1", "v2", "svc", "items", "x"]

    def segment(allow_param: bool) -> str:
        return "{id}" if allow_param and rng.random() < 0.25 else rng.choice(words)

    sources = {"/", "/*"}
    for _ in range(120):
        segments = [segment(True) for _ in range(rng.randint(1, 5))]
        sources.add("/" + "/".join(segments) + ("/*" if rng.random() < 0.4 else ""))
    entries = sorted(
        (
            CompiledEntry(
                id=f"e{n}",
                application_id="a",
                pattern=compile_pattern(source),
                methods=frozenset(),
                versions=frozenset(),
                rate_limit=None,
                is_public=False,
            )
            for n, source in enumerate(sorted(sources))
        ),
        key=compiler.entry_specificity,
    )
    index = compiler.entry_index(entries)
    assert len(index.buckets) > 10  # the patterns really spread over buckets
    paths = ["/", "/api", "/api/", "/api//v1"] + [
        "/" + "/".join(rng.choice([*words, "42"]) for _ in range(rng.randint(1, 6))) for _ in range(400)
    ]
    matched = 0
    for path in paths:
        expected = [e.id for e in entries if e.pattern.matches(path)]
        found = [e.id for e in index.candidates(path) if e.pattern.matches(path)]
        assert found == expected, path
        assert len(index.candidates(path)) < len(entries)
        matched += bool(expected)
    assert matched > 100
