"""Confounding control: propensity scores, matching, weighting, balance, effects, E-values."""
from evalkit.causal.balance import Balance, balance, covariate_frame, love_plot, overlap_plot
from evalkit.causal.matching import MatchResult, match
from evalkit.causal.propensity import PropensityScore, propensity

__all__ = [
    "Balance", "MatchResult", "PropensityScore", "balance", "covariate_frame", "love_plot",
    "match", "overlap_plot", "propensity",
]
