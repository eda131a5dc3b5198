"""Redaction of log values whose dict keys are not strings, beside tests/test_redaction.py:
a mapping keyed by numbers (status codes, counts) is redacted like any other, its keys
kept as they are.

Written while reviewing the surviving mutants of `make mutate`
(mutation-survivors.md); each test states the behaviour a user would notice.
"""

from __future__ import annotations

from recovea_proxy.observability.redact import redact_processor, redact_value

KEY = "sk-proj-abcdefghijklmnop1234"


def test_a_mapping_with_keys_that_are_not_strings_is_redacted() -> None:
    """{404: 'Bearer …', (1, 2): […]}: the values are masked, the keys untouched, and
    nothing breaks on a key that is not a string."""
    value = {404: f"Bearer {KEY}", (1, 2): [KEY], None: 3}
    assert redact_value(value) == {404: "Bearer ****1234", (1, 2): ["****1234"], None: 3}
    event = redact_processor(None, "info", {"event": "upstream", "by_status": value})
    assert event["by_status"][404] == "Bearer ****1234"
