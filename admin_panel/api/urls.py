"""The admin REST API (SPEC §7), mounted under /admin/ on both ports. No trailing slashes."""

from django.urls import path

from admin_panel.api import (
    applications,
    cache,
    config,
    keys,
    queues,
    schema,
    services,
    token_issuers,
    versions,
    whitelist,
)

app_name = "admin_api"

urlpatterns = [
    path("routing/services", services.ServiceListView.as_view(), name="services"),
    path("routing/services/<str:service_name>", services.ServiceDetailView.as_view(), name="service"),
    path("routing/services/<str:service_name>/versions", versions.VersionListView.as_view(), name="versions"),
    path(
        "routing/services/<str:service_name>/versions/<str:version>",
        versions.VersionDetailView.as_view(),
        name="version",
    ),
    path("access/applications", applications.ApplicationListView.as_view(), name="applications"),
    path("access/applications/<str:id>", applications.ApplicationDetailView.as_view(), name="application"),
    path("access/applications/<str:id>/whitelist", whitelist.WhitelistListView.as_view(), name="whitelist"),
    path(
        "access/applications/<str:id>/whitelist/<str:entry_id>",
        whitelist.WhitelistDetailView.as_view(),
        name="whitelist-entry",
    ),
    path(
        "access/applications/<str:id>/token-issuers",
        token_issuers.TokenIssuerListView.as_view(),
        name="token-issuers",
    ),
    path(
        "access/applications/<str:id>/token-issuers/<str:issuer_id>",
        token_issuers.TokenIssuerDetailView.as_view(),
        name="token-issuer",
    ),
    path("access/applications/<str:id>/api-keys", keys.ApiKeyListView.as_view(), name="api-keys"),
    path("access/applications/<str:id>/api-keys/<str:key_id>", keys.ApiKeyDetailView.as_view(), name="api-key"),
    path("cache", cache.CacheView.as_view(), name="cache"),
    path("cache/refresh", cache.CacheRefreshView.as_view(), name="cache-refresh"),
    path("queues", queues.QueuesView.as_view(), name="queues"),
    path("config/export", config.ConfigExportView.as_view(), name="config-export"),
    path("config/import", config.ConfigImportView.as_view(), name="config-import"),
    path("config/revisions", config.RevisionListView.as_view(), name="config-revisions"),
    path("config/revisions/<str:number>", config.RevisionDetailView.as_view(), name="config-revision"),
    path(
        "config/revisions/<str:number>/rollback",
        config.RevisionRollbackView.as_view(),
        name="config-revision-rollback",
    ),
    path("schema", schema.SchemaView.as_view(), name="schema"),
]
