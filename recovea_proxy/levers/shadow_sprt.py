"""Shadow evaluation's verdict: Wald's sequential probability ratio test on the share
of shadowed requests whose routed answer disagreed with the baseline's.

Each comparison is a Bernoulli trial (1 = disagree) with unknown rate p. With
margin m (`RECOVEA_SHADOW_MARGIN`, 0.05):

    H0 (inferior):      p = p0 = m        (and anything worse)
    H1 (non-inferior):  p = p1 = m / 2    (and anything better)

After n comparisons with d disagreements the log-likelihood ratio of H1 to H0 is

    LLR = d ln(p1 / p0) + (n - d) ln((1 - p1) / (1 - p0))

and, once n is at least the minimum sample (`RECOVEA_SHADOW_MIN_SAMPLE`, 30):

    LLR >= ln((1 - beta) / alpha)   → `non_inferior`  (wrongly: probability ≤ alpha)
    LLR <= ln(beta / (1 - alpha))   → `inferior`      (wrongly: probability ≤ beta)
    otherwise                       → no verdict yet, keep sampling

alpha = beta = 0.05. With the default margin an agreeing model is non-inferior after 114
comparisons without a disagreement; each disagreement costs about 27 more
agreements; a model that always disagrees is inferior at the minimum sample.
The counts are only counts: no text is kept to reach a verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

INFERIOR = "inferior"
NON_INFERIOR = "non_inferior"
ALPHA = 0.05
BETA = 0.05


@dataclass(frozen=True, slots=True)
class Sprt:
    """The test's parameters, and its verdict on a pair's counts."""

    margin: float = 0.05
    min_sample: int = 30
    alpha: float = ALPHA
    beta: float = BETA

    def __post_init__(self) -> None:
        if not 0 < self.margin < 1:
            raise ValueError("the margin must be between 0 and 1")

    @property
    def upper(self) -> float:
        """At or above this LLR: non-inferior."""
        return math.log((1 - self.beta) / self.alpha)

    @property
    def lower(self) -> float:
        """At or below this LLR: inferior."""
        return math.log(self.beta / (1 - self.alpha))

    def llr(self, n: int, disagreements: int) -> float:
        """The log-likelihood ratio of H1 (non-inferior) to H0 (inferior)."""
        p0, p1 = self.margin, self.margin / 2
        agree = n - disagreements
        return disagreements * math.log(p1 / p0) + agree * math.log((1 - p1) / (1 - p0))

    def verdict(self, n: int, disagreements: int) -> str | None:
        """`inferior`, `non_inferior`, or None (no verdict yet)."""
        if n < self.min_sample:
            return None
        llr = self.llr(n, disagreements)
        if llr >= self.upper:
            return NON_INFERIOR
        if llr <= self.lower:
            return INFERIOR
        return None
