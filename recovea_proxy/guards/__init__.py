"""The guards: spend caps, rate and concurrency limits."""
