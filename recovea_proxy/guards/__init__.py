"""The guards that bound what a workspace may spend and how fast: hard spend caps, and
rate and concurrency limits. They sit at step 3 of the pipeline (after auth, before
the levers) and never depend on a lever.

| guard                        | modules        | on fault               | refusal           |
| spend caps: USD per          | `caps*.py`,    | fail closed (hybrid):  | 402               |
| workspace, project, team or  | `leases.py`    | no enabled cap → never | `budget_exceeded`,|
| key, per UTC day or month    |                | blocked; an enabled    | 402               |
|                              |                | cap whose state one    | `budget_          |
|                              |                | bounded check cannot   | unverifiable`     |
|                              |                | confirm → refused      |                   |
| rate limits: requests and    | `limits*.py`   | per limit (fail open   | 429               |
| tokens per minute;           |                | by default, counted in | `rate_limited`    |
| concurrency: requests in     |                | `gateway_fail_open_    |                   |
| flight                       |                | total{layer=           |                   |
|                              |                | "ratelimit"}`)         |                   |

Both keep the database (and Redis) off the hot path: a process takes a lease — a
slice of the remaining budget or quota — in one atomic round trip, spends from it in
memory, and gives back what it did not use; a lease expires, so a process that dies
cannot hold a share forever. A request served by the cache or a singleflight
follower costs no budget and no tokens.

Caps, module by module:

    caps_config.py    the caps and workspace options every process holds in memory,
                      reloaded on a NOTIFY when they change
    caps_estimate.py  what a request may cost before it is sent (the reservation),
                      and which paths cannot be metered
    leases.py         the process's budget leases: carve, sync, return, expiry
    caps.py           the guard: reserve at step 3, watch a stream's running output,
                      settle at step 8
    caps_store.py     `recovea cap …` and `/admin/v1/caps`: the SQL behind them
    caps_metrics.py   what the caps count on /metrics
"""
