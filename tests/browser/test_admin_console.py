"""The admin panel as an operator uses it, in a real Chromium: issue 15's items, roles, history, health.

One browser for the module; each test builds its data, logs in and reads what the
page shows (text, form controls, layout measured by the browser itself).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from access.models import ApiKey
from access.services import api_key_create
from admin_panel import dashboard
from admin_panel.models import Revision
from gateway_core import traffic
from gateway_core.traffic import FileTrafficStore, TrafficRecorder
from queues.models import TaskStatus
from routing.models import ServiceConfig
from tests.browser.conftest import WINDOW, requires_chromium, snap
from tests.support.admin_api import make_user
from tests.support.builders import make_app, make_service

pytestmark = [requires_chromium, pytest.mark.django_db(transaction=True), pytest.mark.urls("admin_panel.urls")]


@pytest.fixture(autouse=True)
def fast_passwords(settings) -> None:  # type: ignore[no-untyped-def]  # pytest-django fixture
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def root() -> User:
    return User.objects.create_superuser("admin", password="x-long-password-1")


def text(browser) -> str:  # type: ignore[no-untyped-def]  # WebDriver
    return browser.find_element("tag name", "body").text


def submit(browser, element) -> None:  # type: ignore[no-untyped-def]  # WebDriver, WebElement
    """Click ``element`` and wait until the next page has replaced this one."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    page = browser.find_element("tag name", "html")
    element.click()
    WebDriverWait(browser, 10).until(expected_conditions.staleness_of(page))


def open_page(browser, live_server, url: str) -> None:  # type: ignore[no-untyped-def]  # fixtures
    browser.get(live_server.url + url)


# --- Item 2: the key-created page ----------------------------------------------------------


def test_reloading_the_key_created_page_creates_no_second_key(browser, live_server, log_in, root) -> None:
    app = make_app("shop")
    log_in(root)
    open_page(browser, live_server, reverse("admin:access_apikey_add") + f"?application={app.pk}")
    browser.find_element("id", "id_name").send_keys("mobile")
    submit(browser, browser.find_element("name", "_save"))
    plaintext = browser.find_element("id", "new-api-key").get_attribute("value")
    assert plaintext.startswith("gk_") and "." in plaintext
    assert "/created/" in browser.current_url  # the POST answered with a redirect

    browser.refresh()
    assert "was shown once" in text(browser)
    assert plaintext not in browser.page_source
    assert ApiKey.objects.filter(application=app, name="mobile").count() == 1


# --- Item 3: revoking asks, then says when and by whom ---------------------------------------


def test_revoke_asks_first_then_shows_revoked_at_and_by_and_locks_the_expiry(
    browser, live_server, log_in, root
) -> None:
    key, _ = api_key_create(application=make_app("shop"), name="ci")
    log_in(root)
    open_page(browser, live_server, reverse("admin:access_apikey_change", args=[key.pk]))
    assert browser.find_elements("id", "id_expires_at_0")  # editable while active
    submit(browser, browser.find_element("id", "gw-revoke-link"))
    assert "can never be made active again" in text(browser)
    key.refresh_from_db()
    assert key.is_active  # asking changes nothing
    submit(browser, browser.find_element("id", "gw-revoke-confirm"))

    page = text(browser)
    assert "revoked at " in page and "by admin" in page
    assert not browser.find_elements("id", "id_expires_at_0")  # read-only once revoked
    assert not browser.find_elements("id", "id_is_active")
    key.refresh_from_db()
    assert not key.is_active


# --- Item 4: versions --------------------------------------------------------------------


def test_versions_show_their_share_and_current_version_is_a_choice(browser, live_server, log_in, root) -> None:
    service = make_service(
        "pipeline",
        "http://127.0.0.1:7202",
        versions=[("v1", "http://127.0.0.1:7202", 90), ("v2", "http://127.0.0.1:7203", 10)],
    )
    log_in(root)
    open_page(browser, live_server, reverse("admin:routing_serviceconfig_change", args=[service.pk]))
    shares = [cell.text for cell in browser.find_elements("css selector", "tr.has_original td.field-traffic_share")]
    assert shares == ["90 %", "10 %"]
    choice = browser.find_element("css selector", "select#id_current_version")
    assert [o.get_attribute("value") for o in choice.find_elements("tag name", "option")] == ["", "v1", "v2"]
    assert "once one does, the weighted versions share all unpinned traffic" in text(browser)
    browser.execute_script("document.getElementById('versions-group').scrollIntoView()")
    snap(browser, "versions")


# --- Items 5 and 6: the whitelist inline, wide tables -------------------------------------


def test_no_method_ticked_reads_as_all_methods(browser, live_server, log_in, root) -> None:
    app = make_app("shop", entries=[{"path": "/api/v1/orders/*"}])
    log_in(root)
    open_page(browser, live_server, reverse("admin:access_application_change", args=[app.pk]))
    hint = browser.find_element("css selector", "#whitelist-group .gw-methods-hint")
    assert hint.is_displayed() and hint.text == "None ticked: all methods allowed."


def test_wide_tables_scroll_in_their_box_at_1400_px(browser, live_server, log_in, root) -> None:
    long = "http://upstream-with-a-very-long-host-name.internal.example.com:8443/api/" + "segment/" * 12
    make_service("orders", long, fallback_url=long, versions=[("v2", long)])
    app = make_app("shop", entries=[{"path": "/api/v1/orders/" + "x" * 120 + "/*"}])
    api_key_create(application=app, name="n" * 90)
    TaskStatus.objects.create(queue="email", application_id=app.pk, error="e" * 200, request_id="r" * 100)
    log_in(root)
    browser.set_window_size(*WINDOW)
    pages = [
        reverse("admin:routing_serviceconfig_changelist"),
        reverse("admin:queues_taskstatus_changelist"),
        reverse("admin:access_apikey_changelist"),
        reverse("admin:access_application_change", args=[app.pk]),
    ]
    for url in pages:
        open_page(browser, live_server, url)
        layout = browser.execute_script(
            """
            const tables = [...document.querySelectorAll('#result_list, .inline-group table')];
            return {
              page: document.documentElement.scrollWidth, window: window.innerWidth,
              tables: tables.map(t => {
                const box = t.closest('.results, fieldset.module, .tabular');
                const style = getComputedStyle(box);
                return {fits: t.getBoundingClientRect().right <= box.getBoundingClientRect().right + 1,
                        scrolls: ['auto', 'scroll'].includes(style.overflowX) && box.scrollWidth > box.clientWidth};
              }),
            };
            """
        )
        assert layout["page"] <= layout["window"], (url, layout)  # nothing pushed off the page
        assert layout["tables"], url
        for table in layout["tables"]:
            assert table["fits"] or table["scrolls"], (url, layout)  # every column reachable


# --- Item 7: list errors count from 1 ------------------------------------------------------


def test_list_field_errors_count_lines_from_one(browser, live_server, log_in, root) -> None:
    log_in(root)
    open_page(browser, live_server, reverse("admin:access_application_add"))
    browser.find_element("id", "id_name").send_keys("shop")
    browser.find_element("id", "id_allowed_origins").send_keys("https://ok.example.com\nhttps://bad.example.com/path")
    submit(browser, browser.find_element("name", "_save"))
    errors = browser.find_element("css selector", ".field-allowed_origins .errorlist").text
    assert errors.startswith("Item 2:"), errors


# --- Item 8: history names old and new values ----------------------------------------------


def test_history_names_the_old_and_the_new_value(browser, live_server, log_in, root) -> None:
    service = make_service("orders", "http://old.example.com")
    log_in(root)
    open_page(browser, live_server, reverse("admin:routing_serviceconfig_change", args=[service.pk]))
    url_box = browser.find_element("id", "id_default_url")
    url_box.clear()
    url_box.send_keys("http://new.example.com")
    submit(browser, browser.find_element("name", "_save"))
    open_page(browser, live_server, reverse("admin:routing_serviceconfig_history", args=[service.pk]))
    assert "Default url: http://old.example.com → http://new.example.com" in text(browser)


# --- Item 9: tasks -----------------------------------------------------------------------


def test_tasks_show_application_names_and_errors(browser, live_server, log_in, root) -> None:
    app = make_app("mobile-shop")
    TaskStatus.objects.create(
        queue="email", application_id=app.pk, status="failed", error="SMTP 550 mailbox unavailable"
    )
    log_in(root)
    open_page(browser, live_server, reverse("admin:queues_taskstatus_changelist"))
    row = browser.find_element("css selector", "#result_list tbody tr").text
    assert "mobile-shop" in row and "SMTP 550 mailbox unavailable" in row
    assert str(app.pk) not in row


# --- Item 12 and the health views -----------------------------------------------------------


@pytest.fixture
def traffic_dir(tmp_path: Path, settings) -> Path:  # type: ignore[no-untyped-def]  # pytest-django fixture
    settings.REDIS_URL = None
    settings.GATEWAY_TRAFFIC_DIR = tmp_path
    traffic.traffic_store.cache_clear()
    dashboard._queue_memo.clear()
    yield tmp_path
    traffic.traffic_store.cache_clear()
    dashboard._queue_memo.clear()


def record_traffic(directory: Path) -> None:
    """Two gateway workers' counts: orders v1 healthy, v2 behind an open breaker; billing on its fallback."""
    for worker in range(2):
        recorder = TrafficRecorder(FileTrafficStore(directory))
        recorder._flusher_pid = os.getpid()  # flushed by hand below
        for _ in range(40):
            recorder.record("orders", 200, 0.02, version="v1")
        for _ in range(5):
            recorder.record("orders", 503, 0.001, version="v2", circuit_open=True)
        for _ in range(10):
            recorder.record("billing", 200, 0.3, version="default", fallback=worker == 0)
        recorder.flush()


def test_health_at_a_glance_on_the_dashboard_and_the_service_list(
    browser, live_server, log_in, traffic_dir: Path, monkeypatch
) -> None:
    make_service("orders", "http://127.0.0.1:9", versions=[("v1", "http://127.0.0.1:9"), ("v2", "http://127.0.0.1:9")])
    make_service("billing", "http://127.0.0.1:9", fallback_url="http://127.0.0.1:8")
    record_traffic(traffic_dir)
    # The broker's answer (0 waiting, 1 dead letter) is given: what is under test is how it is drawn.
    monkeypatch.setattr(
        dashboard,
        "queue_depths",
        lambda now_s: [{"queue": "email", "depth": 0, "consumers": 1, "dead_letter_depth": 1}],
    )
    log_in(make_user("viewer", roles=("gateway-viewer",)))
    open_page(browser, live_server, reverse("admin:index"))
    link = browser.find_element("id", "gw-operations").find_element("link text", "Health dashboard")
    assert link.size["height"] < 40, link.size  # one line beside its description, not a letter per line
    operations = browser.find_element("id", "gw-operations").find_element("tag name", "table")
    apps = browser.find_element("css selector", "#content-main .app-access table")
    assert operations.size["width"] <= apps.size["width"] + 1  # the description wraps inside the column
    open_page(browser, live_server, reverse("admin:queues_taskstatus_changelist"))
    sidebar = browser.find_element("id", "nav-sidebar")  # on every page but the index
    assert len(sidebar.find_elements("link text", "Config history")) == 1  # listed once, under Configuration
    submit(browser, sidebar.find_element("link text", "Health dashboard"))

    rows = {
        (r.get_attribute("data-service"), r.get_attribute("data-version")): r.text
        for r in browser.find_elements("css selector", "#gw-health-rows tr")
    }
    assert rows[("orders", None)].split()[:3] == ["orders", "failing", "90"]
    assert "open (10 refused)" in rows[("orders", "v2")]
    assert "closed" in rows[("orders", "v1")]
    assert "50.0 %" in rows[("billing", None)]  # half of billing's answers came from its fallback
    bar = browser.execute_script(
        "const b = document.querySelector('#gw-queues .gw-bar');"
        "return b.querySelector('.dlq').getBoundingClientRect().width / b.getBoundingClientRect().width;"
    )
    assert 0 < bar <= 0.15  # one dead letter is a sliver, not a full red bar
    snap(browser, "health-dashboard")

    open_page(browser, live_server, reverse("admin:routing_serviceconfig_changelist"))
    health = {
        row.find_element("css selector", "th.field-service_name").text: row.find_element(
            "css selector", "td.field-health"
        ).text
        for row in browser.find_elements("css selector", "#result_list tbody tr")
    }
    assert health["orders"].startswith("failing") and "breaker open" in health["orders"]
    assert health["billing"].startswith("degraded") and "50 % fallback" in health["billing"]
    snap(browser, "health-services")


# --- Roles and history ------------------------------------------------------------------


def test_a_viewer_sees_no_add_or_save_and_a_key_manager_no_services(browser, live_server, log_in) -> None:
    service = make_service("orders", "http://127.0.0.1:9")
    log_in(make_user("viewer", roles=("gateway-viewer",)))
    open_page(browser, live_server, reverse("admin:index"))
    assert not browser.find_elements("css selector", "#content-main a.addlink")
    snap(browser, "roles-viewer-index")
    open_page(browser, live_server, reverse("admin:routing_serviceconfig_change", args=[service.pk]))
    assert not browser.find_elements("name", "_save")
    assert "http://127.0.0.1:9" in text(browser)

    log_in(make_user("keys", roles=("gateway-key-manager",)))
    open_page(browser, live_server, reverse("admin:index"))
    links = [a.get_attribute("href") for a in browser.find_elements("css selector", "#content-main a")]
    assert any(link.endswith("/admin/access/apikey/add/") for link in links)
    assert not any("/admin/routing/" in link for link in links)
    open_page(browser, live_server, reverse("admin:routing_serviceconfig_changelist"))
    assert "403" in browser.title or "Forbidden" in text(browser)


def test_history_diff_and_rollback_in_the_browser(browser, live_server, log_in, root) -> None:
    make_service("orders", "http://a.example.com")
    service = ServiceConfig.objects.get()
    service.default_url = "http://b.example.com"
    service.save()
    make_service("billing", "http://c.example.com")
    first, last = Revision.objects.order_by("number").values_list("number", flat=True)[::2]
    log_in(root)
    open_page(browser, live_server, reverse("admin:admin_panel_revision_changelist"))
    assert "created service billing" in text(browser)
    snap(browser, "history-list")
    open_page(browser, live_server, reverse("admin:admin_panel_revision_change", args=[last]) + f"?compare={first}")
    diff = browser.find_element("id", "diff").text
    assert "http://a.example.com" in diff and "http://b.example.com" in diff and "billing" in diff
    snap(browser, "history-diff")

    open_page(browser, live_server, reverse("admin:admin_panel_revision_change", args=[first]))
    submit(browser, browser.find_element("id", "gw-rollback"))
    assert "billing" in browser.find_element("id", "gw-rollback-diff").text
    submit(browser, browser.find_element("id", "gw-rollback-confirm"))
    assert f"Rolled back to revision {first}" in text(browser)
    deadline = time.monotonic() + 1
    while time.monotonic() < deadline and ServiceConfig.objects.count() != 1:
        time.sleep(0.02)
    assert list(ServiceConfig.objects.values_list("service_name", "default_url")) == [
        ("orders", "http://a.example.com")
    ]
    assert Revision.objects.order_by("-number").first().rollback_of == first
