"""Demo upstream services for the quick start (not used in production)."""
