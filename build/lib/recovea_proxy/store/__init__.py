"""Storage: the Postgres the gateway uses (embedded or external), its migrations,
and the app's connection pool. Knows nothing of requests."""
