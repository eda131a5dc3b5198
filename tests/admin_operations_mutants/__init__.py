"""The admin operations behind the CLI and the admin API, on the owner connection — the
one row-level security does not bind, so every read and write here is scoped by the
code alone.

Written while reviewing the surviving mutants of `make mutate`
(mutation-survivors.md); each test states the behaviour a user would notice.
"""
