"""Django admin for applications, whitelist entries and API keys (port 4201).

API keys are generated server-side by ``access.services.api_key_create``; the add
form's POST redirects to a one-time page that shows the plaintext once
(``access.key_handoff``: POST/redirect/GET, so a reload never creates a second key, and
nothing usable is stored). The hash is never shown or editable. Revoking asks first,
is final, and the key's page then says when and by whom it was revoked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.db.models.fields import Field
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from access.key_handoff import key_handoff_put, key_handoff_take
from access.models import ApiKey, Application, EndpointWhitelist, TokenIssuer
from access.services import api_key_create, api_key_withdraw
from gateway_core.admin_actions import activate, deactivate
from gateway_core.admin_history import ChangeValuesMixin
from gateway_core.validators import HTTP_METHODS

_SEPARATORS = re.compile(r"[,\s]+")


class StringListField(forms.Field):
    """Edit a JSON list of strings as text, one item per line (commas work too).

    Items are taken as typed; the model's validators judge them, so their messages
    show on this field exactly as the admin API would report them.
    """

    widget = forms.Textarea(attrs={"rows": 3, "cols": 60})

    def to_python(self, value: object) -> list[str]:
        if isinstance(value, list):
            return [str(item) for item in value]
        return [item for item in _SEPARATORS.split(str(value or "")) if item]

    def prepare_value(self, value: object) -> object:
        if isinstance(value, list):
            return "\n".join(str(item) for item in value)
        return value


class MethodsWidget(forms.CheckboxSelectMultiple):
    """Method checkboxes that say what none ticked means: every method, not none."""

    def render(self, name: str, value: object, attrs: dict | None = None, renderer: object = None) -> str:
        boxes = super().render(name, value, attrs, renderer)
        hint = format_html('<div class="gw-methods-hint">{}</div>', "None ticked: all methods allowed.")
        return boxes + hint


class StringListAdminMixin:
    """Render the model's JSON list fields as text boxes, and methods as checkboxes."""

    string_list_fields: Sequence[str] = ("allowed_services", "allowed_versions", "allowed_origins", "required_scopes")

    def formfield_for_dbfield(self, db_field: Field, request: HttpRequest, **kwargs: object) -> forms.Field | None:
        if db_field.name == "allowed_methods":
            return forms.MultipleChoiceField(
                choices=[(m, m) for m in HTTP_METHODS],
                widget=MethodsWidget,
                required=False,
                label="Allowed methods",
                help_text=db_field.help_text,
            )
        if db_field.name in self.string_list_fields:
            return StringListField(
                required=False,
                label=str(db_field.verbose_name).capitalize(),
                help_text=f"{db_field.help_text} One per line.",
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)  # type: ignore[misc]  # ModelAdmin's


def _join(values: Sequence[str], empty: str) -> str:
    return ", ".join(values) if values else empty


class TokenIssuerInline(StringListAdminMixin, admin.StackedInline):
    """Who may sign this application's bearer tokens: one source each (JWKS URL, secret env, introspection)."""

    model = TokenIssuer
    extra = 0
    string_list_fields = ("audiences", "algorithms")
    fields = (
        ("issuer", "is_active"),
        "jwks_url",
        "secret_env",
        "introspection_url",
        ("audiences", "algorithms"),
        ("user_claim", "scope_claim", "leeway_s"),
    )


class WhitelistInline(StringListAdminMixin, admin.TabularInline):
    model = EndpointWhitelist
    extra = 0
    fields = (
        "endpoint_path",
        "allowed_methods",
        "allowed_versions",
        "rate_limit",
        "rate_limit_by",
        "is_public",
        "required_scopes",
    )
    show_change_link = True


class ApiKeyInline(admin.TabularInline):
    """The application's keys, read-only: keys are created on their own add page."""

    model = ApiKey
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("name", "key_prefix", "status", "expires_at", "last_used_at", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Application | None = None) -> bool:
        return False

    @admin.display(description="status")
    def status(self, obj: ApiKey) -> str:
        return key_status(obj)


def key_status(key: ApiKey) -> str:
    """Return ``active``, ``revoked`` or ``expired`` for display."""
    if not key.is_active:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= timezone.now():
        return "expired"
    return "active"


@admin.register(Application)
class ApplicationAdmin(ChangeValuesMixin, StringListAdminMixin, admin.ModelAdmin):
    list_display = (
        "name",
        "is_active",
        "services",
        "origins",
        "whitelist_count",
        "active_key_count",
        "updated_at",
    )
    list_filter = ("is_active",)
    search_fields = ("name", "description", "whitelist__endpoint_path", "api_keys__key_prefix")
    ordering = ("name",)
    actions = [activate, deactivate]
    inlines = [WhitelistInline, TokenIssuerInline, ApiKeyInline]
    readonly_fields = ("id", "add_key_link", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "description", "is_active")}),
        ("Scope", {"fields": ("allowed_services", "allowed_versions", "allowed_origins")}),
        ("API keys", {"fields": ("add_key_link",)}),
        ("Record", {"fields": ("id", "created_at", "updated_at"), "classes": ("collapse",)}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .annotate(
                _whitelist_count=Count("whitelist", distinct=True),
                _active_key_count=Count("api_keys", filter=Q(api_keys__is_active=True), distinct=True),
            )
        )

    @admin.display(description="services")
    def services(self, obj: Application) -> str:
        return _join(obj.allowed_services, "all")

    @admin.display(description="origins")
    def origins(self, obj: Application) -> str:
        return _join(obj.allowed_origins, "none")

    @admin.display(description="whitelist entries", ordering="_whitelist_count")
    def whitelist_count(self, obj: Application) -> int:
        return getattr(obj, "_whitelist_count", 0)

    @admin.display(description="active keys", ordering="_active_key_count")
    def active_key_count(self, obj: Application) -> int:
        return getattr(obj, "_active_key_count", 0)

    @admin.display(description="New key")
    def add_key_link(self, obj: Application) -> str:
        if obj.pk is None:
            return "Save the application first, then add keys."
        url = reverse("admin:access_apikey_add") + f"?application={obj.pk}"
        return format_html('<a class="addlink" href="{}">Add an API key for this application</a>', url)


@admin.register(EndpointWhitelist)
class EndpointWhitelistAdmin(ChangeValuesMixin, StringListAdminMixin, admin.ModelAdmin):
    list_display = ("endpoint_path", "application", "methods", "versions", "rate_limit", "is_public", "updated_at")
    list_filter = ("is_public", "application")
    search_fields = ("endpoint_path", "application__name")
    list_select_related = ("application",)
    autocomplete_fields = ("application",)
    ordering = ("application__name", "endpoint_path")
    readonly_fields = ("id", "created_at", "updated_at")
    fields = (
        "application",
        "endpoint_path",
        "allowed_methods",
        "allowed_versions",
        "rate_limit",
        "rate_limit_by",
        "is_public",
        "required_scopes",
        "id",
        "created_at",
        "updated_at",
    )

    @admin.display(description="methods")
    def methods(self, obj: EndpointWhitelist) -> str:
        return _join(obj.allowed_methods, "all")

    @admin.display(description="versions")
    def versions(self, obj: EndpointWhitelist) -> str:
        return _join(obj.allowed_versions, "all")


class KeyStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("active", "Active"), ("expired", "Expired"), ("revoked", "Revoked")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        now = timezone.now()
        if self.value() == "revoked":
            return queryset.filter(is_active=False)
        if self.value() == "expired":
            return queryset.filter(is_active=True, expires_at__lte=now)
        if self.value() == "active":
            return queryset.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now), is_active=True)
        return queryset


class ApiKeyAddForm(forms.ModelForm):
    """What an operator chooses for a new key; prefix and secret are generated."""

    class Meta:
        model = ApiKey
        fields = ("application", "name", "expires_at")


def key_revocation(key: ApiKey) -> tuple[object, str] | None:
    """Return (when, who) of the history entry that revoked ``key``; None when it is active or unrecorded."""
    if key.is_active:
        return None
    entry = (
        LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(ApiKey),
            object_id=str(key.pk),
            action_flag=CHANGE,
        )
        .filter(Q(change_message__contains="Is active") | Q(change_message__contains="Revoked"))
        .select_related("user")
        .order_by("-action_time")
        .first()
    )
    if entry is None:
        return None
    return entry.action_time, entry.user.get_username()


@admin.action(description="Revoke selected API keys…", permissions=["change"])
def revoke_keys(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
    """Ask first (a revoked key never works again), then revoke each selected active key."""
    active = list(queryset.filter(is_active=True).select_related("application"))
    if request.POST.get("confirm") != "yes":
        context = {
            **modeladmin.admin_site.each_context(request),
            "title": "Revoke API keys?",
            "opts": modeladmin.opts,
            "keys": active,
            "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
            "action": "revoke_keys",
            "change_url": reverse("admin:access_apikey_changelist"),
        }
        return TemplateResponse(request, "admin/access/apikey/revoke_confirm.html", context)
    for key in active:
        api_key_withdraw(key=key, actor=request.user)
    modeladmin.message_user(request, f"{len(active)} API key(s) revoked.", messages.SUCCESS)
    return None


@admin.register(ApiKey)
class ApiKeyAdmin(ChangeValuesMixin, admin.ModelAdmin):
    list_display = ("name", "application", "key_prefix", "status", "expires_at", "last_used_at", "created_at")
    list_filter = (KeyStatusFilter, "application")
    search_fields = ("name", "key_prefix", "application__name")
    list_select_related = ("application",)
    autocomplete_fields = ("application",)
    ordering = ("application__name", "name")
    actions = [revoke_keys]
    # api_key_hash is in no list here: it is neither shown nor editable.
    change_fields = ("application", "name", "key_prefix", "expires_at", "status", "revoked", "last_used_at")
    # Revoking has its own confirmed page: never an unticked box on a save.
    change_readonly = (
        "application",
        "key_prefix",
        "status",
        "revoked",
        "last_used_at",
        "id",
        "created_at",
        "updated_at",
    )

    def get_form(
        self, request: HttpRequest, obj: ApiKey | None = None, change: bool = False, **kwargs: object
    ) -> type[forms.ModelForm]:
        if obj is None:
            kwargs["form"] = ApiKeyAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> Sequence[str]:
        if obj is None:
            return ApiKeyAddForm.Meta.fields
        return (*self.change_fields, "id", "created_at", "updated_at")

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> Sequence[str]:
        if obj is None:
            return ()
        # Revocation is final: a key that may have leaked must not come back to life.
        return self.change_readonly if obj.is_active else (*self.change_readonly, "name", "expires_at")

    @admin.display(description="status")
    def status(self, obj: ApiKey) -> str:
        return key_status(obj)

    @admin.display(description="revoked")
    def revoked(self, obj: ApiKey) -> str:
        if obj.pk is None:
            return ""
        if obj.is_active:
            url = reverse("admin:access_apikey_revoke", args=[obj.pk])
            return format_html('<a class="deletelink" id="gw-revoke-link" href="{}">Revoke this key…</a>', url)
        revocation = key_revocation(obj)
        if revocation is None:
            return "revoked (not recorded when or by whom)"
        at, by = revocation
        return format_html("revoked at {} by {}", timezone.localtime(at).strftime("%Y-%m-%d %H:%M:%S %Z"), by)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/created/", view(self.created_view), name="access_apikey_created"),
            path("<path:object_id>/revoke/", view(self.revoke_view), name="access_apikey_revoke"),
            *super().get_urls(),
        ]

    def _key_or_404(self, request: HttpRequest, object_id: str) -> ApiKey:
        key = self.get_object(request, object_id)
        if key is None:
            raise Http404("No such API key.")
        return key

    def created_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Show a new key's plaintext once; a reload (or any later visit) says it was shown already."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        key = self._key_or_404(request, object_id)
        page = reverse("admin:access_apikey_created", args=[key.pk])
        context = {
            **self.admin_site.each_context(request),
            "title": "API key created",
            "opts": self.opts,
            "key": key,
            "change_url": reverse("admin:access_apikey_change", args=[key.pk]),
            "application_url": reverse("admin:access_application_change", args=[key.application_id]),
            "add_another_url": reverse("admin:access_apikey_add") + f"?application={key.application_id}",
        }
        response = TemplateResponse(request, "admin/access/apikey/key_created.html", context)
        plaintext = key_handoff_take(request, response, key_id=key.pk, path=page)
        context["plaintext"] = plaintext
        if plaintext is None:
            response.status_code = 410  # Gone: it was shown once
        # The page holds the only copy of the secret: no cache, proxy or back-button copy.
        response["Cache-Control"] = "no-store"
        response["Pragma"] = "no-cache"
        return response

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET: ask to revoke one key (it never works again); POST: revoke it."""
        key = self._key_or_404(request, object_id)
        if not self.has_change_permission(request, key):
            raise PermissionDenied
        change_url = reverse("admin:access_apikey_change", args=[key.pk])
        if request.method == "POST" and key.is_active:
            api_key_withdraw(key=key, actor=request.user)
            self.message_user(request, f"API key {key.key_prefix} revoked; it stops working within a second.")
            return HttpResponseRedirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "title": "Revoke API key?",
            "opts": self.opts,
            "keys": [key] if key.is_active else [],
            "change_url": change_url,
        }
        return TemplateResponse(request, "admin/access/apikey/revoke_confirm.html", context)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: forms.ModelForm, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        key, plaintext = api_key_create(
            application=form.cleaned_data["application"],
            name=form.cleaned_data["name"],
            expires_at=form.cleaned_data.get("expires_at"),
        )
        # The admin goes on with ``obj`` (history, redirect): make it the created row.
        for field in ApiKey._meta.concrete_fields:
            setattr(obj, field.attname, getattr(key, field.attname))
        obj._state = key._state
        # Held only for this request's response; never saved, logged or put in a message.
        request._gateway_new_key = plaintext  # type: ignore[attr-defined]  # per-request scratch

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None) -> HttpResponse:
        plaintext = getattr(request, "_gateway_new_key", None)
        if plaintext is None:
            return super().response_add(request, obj, post_url_continue)
        # POST/redirect/GET: a reload of the next page re-sends a GET, never this POST.
        page = reverse("admin:access_apikey_created", args=[obj.pk])
        response = HttpResponseRedirect(page, status=303)
        key_handoff_put(request, response, key_id=obj.pk, plaintext=plaintext, path=page)
        return response
