"""Confounding control: propensity scores, matching, weighting, balance, effects, E-values.

The flow: :func:`propensity` fits the score; :func:`match` (MatchIt's greedy
nearest-neighbour matching) or :func:`weights` (IPW / overlap weights) adjust for it;
:func:`balance` checks that the arms now look alike; :func:`estimate` does all of this
and returns an :class:`Effect`; :func:`evalue` asks how much unmeasured confounding
would be needed to explain the effect away.
"""
from evalkit.causal.balance import Balance, balance, covariate_frame, love_plot, overlap_plot
from evalkit.causal.calibration import (
    Calibrated, Null, SystematicErrorModel, calibrate, calibrate_ci, calibrate_p,
    calibration_plot, fit_null, fit_systematic_error_model, negative_controls,
)
from evalkit.causal.estimate import Effect, equipoise, estimate
from evalkit.causal.evalue import EValue, evalue
from evalkit.causal.matching import MatchResult, match
from evalkit.causal.propensity import PropensityScore, propensity
from evalkit.causal.weighting import WeightResult, ess, weights

__all__ = [
    "Calibrated", "Null", "SystematicErrorModel", "calibrate", "calibrate_ci", "calibrate_p",
    "calibration_plot", "fit_null", "fit_systematic_error_model", "negative_controls",
    "Balance", "EValue", "Effect", "MatchResult", "PropensityScore", "WeightResult",
    "balance", "covariate_frame", "equipoise", "ess", "estimate", "evalue", "love_plot",
    "match", "overlap_plot", "propensity", "weights",
]
