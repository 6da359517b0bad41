"""The gateway's shared vocabulary: config, errors, request context, compiled records, observability.

Every app (routing, access, queues, admin_panel) may import from here; nothing here
imports an app (the import-linter contracts in ``.importlinter`` keep it so).
"""
