"""Outcome models: count regressions, two-part cost models, difference-in-differences,
interrupted time series and the bootstraps that resample them.

Every fit is a value with a tidy ``.table`` keyed by ``term`` and ``.at(term, column)``;
``effect(...)`` returns the one effect type, :class:`EffectResult` (see
:mod:`evalkit.models.base`).

>>> import evalkit.models as m
>>> fit = m.count_model(members, "er_visits ~ treated + age", exposure="member_months")  # doctest: +SKIP
>>> fit.effect("treated").at("rate_ratio")                                               # doctest: +SKIP
"""
from .base import EffectResult, ModelResult
from .bootstrap import BootstrapResult, bootstrap, bootstrap_indices
from .count import CountResult, count_model
from .count_bootstrap import bootstrap_count_effect
from .did import DiDResult, did, event_study_plot
from .effects import check_alpha
from .its import ITSResult, its, its_plot
from .twopart import TwoPartResult, park_test, two_part
from .twopart_bootstrap import bootstrap_two_part

__all__ = ["BootstrapResult", "CountResult", "DiDResult", "EffectResult", "ITSResult",
           "ModelResult", "TwoPartResult", "bootstrap", "bootstrap_count_effect",
           "bootstrap_indices", "bootstrap_two_part", "check_alpha", "count_model", "did",
           "event_study_plot", "its", "its_plot", "park_test", "two_part"]
