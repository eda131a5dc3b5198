"""Shadow evaluation's comparators: whether a routed answer agrees with the baseline
model's answer to the same request, offline (no judge model), and which comparator
said so. The first that applies decides:

- `refusal`: exactly one side refused → disagree.
- `finish`: the finish reasons differ (`stop`, `length`, `tool`, `filter`, ...) →
  disagree.
- `tool_calls`: either side called a tool → agree when both made the same calls
  (names and canonical arguments), in any order.
- `json`: either text is a JSON object or array → agree when both parse and are
  equal, field for field.
- `short`: both texts have at most `SHORT_WORDS` words → agree when equal after
  normalizing case, whitespace, surrounding quotes and trailing punctuation.
- `prose`: anything else → agree when chrF (beta 2, character n-grams 1..6,
  whitespace left out) reaches the threshold and the longer text is at most
  `length_ratio_max` times the shorter.

chrF is computed on the first `CHRF_CHARS` characters of each text (a bounded cost);
the length ratio on the whole texts.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import orjson

from recovea_proxy.levers.shadow_answer import Answer

SHORT_WORDS = 8
CHRF_ORDER = 6
CHRF_BETA = 2.0
CHRF_CHARS = 8192
_SPACE = re.compile(r"\s+")
_TRAILING = ".!?;:,…"
_QUOTES = "\"'`"


@dataclass(frozen=True, slots=True)
class Comparison:
    agree: bool
    #: the comparator that decided (a bounded metric label)
    comparator: str


def compare(
    routed: Answer, baseline: Answer, *, chrf_min: float = 0.5, length_ratio_max: float = 2.0
) -> Comparison:
    """Whether the routed answer agrees with the baseline's, and which comparator said."""
    if routed.refusal != baseline.refusal:
        return Comparison(False, "refusal")
    if routed.finish != baseline.finish:
        return Comparison(False, "finish")
    if routed.tool_calls or baseline.tool_calls:
        return Comparison(sorted(routed.tool_calls) == sorted(baseline.tool_calls), "tool_calls")
    a, b = routed.text.strip(), baseline.text.strip()
    if a[:1] in ("{", "[") or b[:1] in ("{", "["):
        return Comparison(json_equal(a, b), "json")
    if max(len(a.split()), len(b.split())) <= SHORT_WORDS:
        return Comparison(normalized(a) == normalized(b), "short")
    return Comparison(prose_agrees(a, b, chrf_min, length_ratio_max), "prose")


def json_equal(a: str, b: str) -> bool:
    """Both texts are valid JSON and equal, field for field (key order aside)."""
    try:
        left, right = orjson.loads(a), orjson.loads(b)
    except orjson.JSONDecodeError:
        return False
    return bool(left == right)


def normalized(text: str) -> str:
    """A short answer for an exact match: lower case, whitespace collapsed, surrounding
    quotes and trailing punctuation removed."""
    text = _SPACE.sub(" ", text.lower()).strip()
    text = text.strip(_QUOTES).rstrip(_TRAILING).strip().strip(_QUOTES)
    return text


def prose_agrees(a: str, b: str, chrf_min: float, length_ratio_max: float) -> bool:
    """chrF of `a` against `b` at least `chrf_min`, lengths within `length_ratio_max`."""
    short, long = sorted((len(a), len(b)))
    if long > length_ratio_max * max(short, 1):
        return False
    return chrf(a, b) >= chrf_min


def chrf(
    hypothesis: str, reference: str, order: int = CHRF_ORDER, beta: float = CHRF_BETA
) -> float:
    """The character n-gram F-score (Popović 2015, as sacrebleu computes it: whitespace
    removed, precision and recall averaged over the orders 1..`order`, then F-beta)."""
    hyp = _SPACE.sub("", hypothesis[:CHRF_CHARS])
    ref = _SPACE.sub("", reference[:CHRF_CHARS])
    if not hyp and not ref:
        return 1.0
    if not hyp or not ref:
        return 0.0
    precision = recall = 0.0
    orders = 0
    for n in range(1, order + 1):
        hyp_grams = Counter(hyp[i : i + n] for i in range(len(hyp) - n + 1))
        ref_grams = Counter(ref[i : i + n] for i in range(len(ref) - n + 1))
        hyp_total, ref_total = sum(hyp_grams.values()), sum(ref_grams.values())
        if not hyp_total or not ref_total:
            break
        matches = sum((hyp_grams & ref_grams).values())
        precision += matches / hyp_total
        recall += matches / ref_total
        orders += 1
    precision, recall = precision / orders, recall / orders
    if precision == 0 and recall == 0:
        return 0.0
    b2 = beta * beta
    return (1 + b2) * precision * recall / (b2 * precision + recall)
