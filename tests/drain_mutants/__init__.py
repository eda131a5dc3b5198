"""The drainer's promises, in this process, against the session's real Postgres
reached through a unix-socket gate the tests can shut and open again.

Written while reviewing the surviving mutants of `make mutate`
(mutation-survivors.md); each test states the behaviour a user would notice.
"""
