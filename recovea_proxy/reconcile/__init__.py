"""Reconciliation: the providers' own usage and cost reports, polled read-only with a
workspace's report key, held against the ledger.

| module            | owns |
| `report_keys`     | storing, listing and removing report keys (sealed like provider keys) |
| `opening`         | decrypting a report key: the poller's alone |
| `figures`         | one provider figure (day, model, API key, project: counts and amounts) |
| `fetch`           | the one report client (strict timeouts) and its failure reasons |
| `openai_report`   | OpenAI's organization usage and costs APIs, paged, parsed |
| `anthropic_report`| Anthropic's usage and cost report APIs, paged, parsed |
| `poller`          | each workspace/provider/day on its own: retried, stored, set aside |
| `schedule`        | the poller as a background job (one replica at a time) |
| `verdict`         | the tolerance and the verdicts |
| `compare`         | provider figures against the ledger and the rollup, per day and model |
| `api`             | `GET /v1/recovea/reconciliation`, `/admin/v1/report-keys` |
| `commands`        | `recovea report-key …`, `recovea reconcile` |

See docs/reconciliation.md.
"""
