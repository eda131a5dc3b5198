"""Management operations (workspaces, keys, provider keys), shared by the CLI and,
later, the HTTP admin API. Each runs in one transaction: nothing half-written."""
