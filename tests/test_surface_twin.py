"""Which provider a bare `/v1/*` request is for, by its headers (`surfaces.for_headers`):
Anthropic's when it carries `anthropic-version`, or an Anthropic-shaped key and no
rcv_ key; else OpenAI's. Checked against that rule, written out plainly here, over
header lists as clients send them and as a hostile one might (names twice, keys in
both credential headers, odd spacing and case)."""

from __future__ import annotations

import random

from recovea_proxy.surfaces import SurfaceMap, for_headers

BARE = SurfaceMap().resolve(b"/v1/models")

CREDENTIALS = [
    (b"authorization", b"Bearer rcv_live_abc"),
    (b"authorization", b"bearer  sk-ant-api03-xyz "),
    (b"authorization", b"Bearer sk-proj-123"),
    (b"authorization", b"Basic c2stYW50LXh5eg=="),
    (b"authorization", b"BEARER RCV_live_abc"),
    (b"x-api-key", b"sk-ant-api03-xyz"),
    (b"x-api-key", b" rcv_live_abc"),
    (b"x-api-key", b"sk-other"),
    (b"x-api-key", b""),
]
OTHERS = [
    (b"content-type", b"application/json"),
    (b"user-agent", b"OpenAI/Python 1.99"),
    (b"x-stainless-lang", b"python"),
    (b"accept", b"application/json"),
    (b"anthropic-beta", b"tools-2024-04-04"),
]


def anthropic_by_rule(headers: list[tuple[bytes, bytes]]) -> bool:
    """The rule as the docstring states it, over every header."""
    if any(name == b"anthropic-version" for name, _ in headers):
        return True
    keys = []
    for name, value in headers:
        if name == b"x-api-key":
            keys.append(value.strip())
        elif name == b"authorization" and value[:7].lower() == b"bearer ":
            keys.append(value[7:].strip())
    anthropic = any(key.startswith(b"sk-ant-") for key in keys)
    rcv = any(key[:4].lower() == b"rcv_" for key in keys)
    return anthropic and not rcv


def test_the_usual_clients_go_where_their_headers_say() -> None:
    assert BARE is not None and BARE.anthropic_twin is not None
    openai_sdk = [*OTHERS[:4], (b"authorization", b"Bearer rcv_live_abc")]
    anthropic_sdk = [(b"x-api-key", b"rcv_live_abc"), (b"anthropic-version", b"2023-06-01")]
    anthropic_key_alone = [(b"x-api-key", b"sk-ant-api03-xyz")]
    assert for_headers(BARE, openai_sdk).provider.name == "openai"
    assert for_headers(BARE, anthropic_sdk).provider.name == "anthropic"
    assert for_headers(BARE, anthropic_key_alone).provider.name == "anthropic"
    assert for_headers(BARE, []).provider.name == "openai"


def test_every_mix_of_headers_follows_the_rule() -> None:
    """5,000 header lists drawn from credentials and other headers (names repeated,
    `anthropic-version` now and then), in any order."""
    assert BARE is not None
    draw = random.Random(7)
    twice = 0
    for _ in range(5000):
        headers = draw.sample(OTHERS, draw.randint(0, len(OTHERS)))
        headers += draw.choices(CREDENTIALS, k=draw.randint(0, 3))
        if draw.random() < 0.1:
            headers.append((b"anthropic-version", b"2023-06-01"))
        draw.shuffle(headers)
        twice += len({name for name, _ in headers}) < len(headers)
        expected = "anthropic" if anthropic_by_rule(headers) else "openai"
        assert for_headers(BARE, headers).provider.name == expected, headers
    assert twice > 500  # the walk for names seen twice was taken often
