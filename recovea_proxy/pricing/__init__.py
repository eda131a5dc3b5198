"""What a request costs: the price table and the one function that prices usage.

Below both the meter (the rollup prices the ledger) and the guards (a spend cap
reserves against the same prices), so the two can never disagree about a request's
cost. It imports nothing of the gateway's own (`overrides` reads the database through
the connection it is handed).

    rates.py      one model's rates: standard, cache writes, long context, service tiers
    table.py      the shipped table (`prices.json`), overrides, model-name resolution
    cost.py       `cost`: USD for a request's tokens at a tier — the only price function
    overrides.py  a workspace's price overrides: read from and written to `model_prices`
"""
