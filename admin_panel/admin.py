"""The config history in the Django admin: revisions, a readable diff between any two, rollback.

Revisions are written by ``admin_panel.revisions`` only; here they are read
(``view_revision``), compared, and rolled back to. A rollback asks first, showing the
import's dry-run diff, and needs the editor's permissions on every config table.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from admin_panel.config_io import ConfigInvalid
from admin_panel.models import Revision
from admin_panel.revisions import document_diff, revision_document, revision_get, revision_rollback
from admin_panel.roles import config_permissions


def may_roll_back(request: HttpRequest) -> bool:
    """Return True when the user may roll the config back (an import: the editor's permissions)."""
    return request.user.has_perms(("admin_panel.view_revision", *config_permissions("view", "add", "change", "delete")))


@admin.register(Revision)
class RevisionAdmin(admin.ModelAdmin):
    list_display = ("number", "created_at", "who", "summary", "rollback_of")
    list_display_links = ("number",)
    search_fields = ("=number", "username", "summary")
    date_hierarchy = "created_at"
    ordering = ("-number",)
    list_per_page = 50

    def get_queryset(self, request: HttpRequest):  # type: ignore[no-untyped-def]  # QuerySet[Revision]
        return super().get_queryset(request).defer("document")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return False  # the history is the audit trail: it is pruned by age, never edited

    @admin.display(description="user", ordering="username")
    def who(self, obj: Revision) -> str:
        return obj.username or "(shell)"

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<int:number>/rollback/", view(self.rollback_view), name="admin_panel_revision_rollback"),
            *super().get_urls(),
        ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        """Show one revision: who and when, its diff against another (the previous by default), its document."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        revision = _revision_or_404(object_id)
        numbers = list(Revision.objects.order_by("-number").values_list("number", flat=True)[:200])
        compare = _compare_with(request, revision, numbers)
        older = revision_get(compare) if compare is not None else None
        diff = document_diff(older.document if older is not None else {}, revision.document)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Config revision {revision.number}",
            "opts": self.opts,
            "revision": revision,
            "compare": compare,
            "numbers": [n for n in numbers if n != revision.number],
            "diff": diff,
            "diff_is_empty": not any(diff.values()),
            "may_roll_back": may_roll_back(request),
            "rollback_url": reverse("admin:admin_panel_revision_rollback", args=[revision.number]),
            "document_url": reverse("admin_api:config-revision", args=[revision.number]),
        }
        return TemplateResponse(request, "admin/admin_panel/revision/detail.html", context)

    def rollback_view(self, request: HttpRequest, number: int) -> HttpResponse:
        """GET: show what rolling back to ``number`` changes and ask; POST: roll back."""
        if not may_roll_back(request):
            raise PermissionDenied
        revision = _revision_or_404(str(number))
        problems: list[str] = []
        if request.method == "POST":
            try:
                diff = revision_rollback(revision, actor=request.user)
            except ConfigInvalid as invalid:
                problems = [str(p) for p in invalid.problems]
            else:
                changes = len(diff.created) + len(diff.updated) + len(diff.deleted)
                self.message_user(
                    request,
                    format_html(
                        "Rolled back to revision {}: {} change(s), now live on every gateway.", number, changes
                    ),
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:admin_panel_revision_changelist"))
        preview: dict[str, list[dict[str, object]]] | None = document_diff(revision_document(), revision.document)
        try:
            revision_rollback(revision, actor=request.user, dry_run=True)  # would the import accept it?
        except ConfigInvalid as invalid:
            preview = None
            problems = problems or [str(p) for p in invalid.problems]
        context = {
            **self.admin_site.each_context(request),
            "title": f"Roll back to revision {revision.number}?",
            "opts": self.opts,
            "revision": revision,
            "preview": preview,
            "preview_is_empty": preview is not None and not any(preview.values()),
            "problems": problems,
        }
        status = 400 if problems and request.method == "POST" else 200
        return TemplateResponse(request, "admin/admin_panel/revision/rollback.html", context, status=status)


def _revision_or_404(object_id: str) -> Revision:
    if not object_id.isdigit():
        raise Http404("No such revision.")
    revision = revision_get(int(object_id))
    if revision is None:
        raise Http404("No such revision.")
    return revision


def _compare_with(request: HttpRequest, revision: Revision, numbers: list[int]) -> int | None:
    """Return the revision to compare with: ``?compare=N``, else the one before ``revision``."""
    asked = request.GET.get("compare", "")
    if asked.isdigit():
        return int(asked)
    older = [n for n in numbers if n < revision.number]
    if older:
        return max(older)
    before = Revision.objects.filter(number__lt=revision.number).order_by("-number").values_list("number", flat=True)
    return before.first()
