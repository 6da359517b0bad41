"""Django's PostgreSQL backend with a pool that fails fast while the database refuses connections."""
