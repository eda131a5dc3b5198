"""One rate or concurrency limit as the gateway holds it, and which requests it applies to.

A limit (a row of `recovea.rate_limits`) belongs to a workspace and has a scope:

| scope       | applies to a request whose key                  |
| `workspace` | belongs to the workspace (every key)            |
| `project`   | is in that project (`Principal.project_id`)     |
| `team`      | is in that team (`Principal.team_id`)           |
| `key`       | is that rcv_ key (`Principal.key_id`)           |

and, when it names a model, only to requests for that model (the model the caller
asked for, before any routing). Each of `rpm`, `tpm` and `concurrency` is optional; a
request is admitted only when every limit that applies has room.
"""

from __future__ import annotations

from dataclasses import dataclass

SCOPES = ("workspace", "project", "team", "key")
#: the kinds of limit, as metric labels and in refusals
KINDS = ("requests", "tokens", "concurrency")
RPM_MAX = 1_000_000_000
TPM_MAX = 1_000_000_000_000
CONCURRENCY_MAX = 1_000_000
MODEL_MAX = 256


@dataclass(frozen=True, slots=True)
class LimitRule:
    """One limit: who it applies to, and its bounds (None: not limited)."""

    id: str
    workspace_id: str
    scope: str
    #: the project, team or key id the scope names (None for `workspace`)
    target: str | None
    #: None: every model
    model: str | None
    rpm: int | None
    tpm: int | None
    concurrency: int | None
    #: refuse (429) rather than admit when the counters cannot be reached
    fail_closed: bool = False

    def applies(
        self, project_id: str | None, team_id: str | None, key_id: str | None, model: str | None
    ) -> bool:
        """Whether a request of that key, for that model, falls under this limit."""
        if self.model is not None and self.model != model:
            return False
        scope = self.scope
        if scope == "workspace":
            return True
        if scope == "key":
            return self.target == key_id
        if scope == "project":
            return self.target == project_id
        return self.target == team_id
