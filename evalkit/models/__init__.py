"""Outcome models: count regressions, two-part cost models, difference-in-differences,
interrupted time series and the bootstraps that resample them.

>>> import evalkit.models as m
>>> fit = m.count_model(members, "er_visits ~ treated + age", exposure="member_months")  # doctest: +SKIP
"""
from .bootstrap import bootstrap, bootstrap_count_effect, bootstrap_indices, bootstrap_two_part
from .count import count_model
from .effects import EffectResult, check_alpha
from .did import did
from .its import its
from .twopart import park_test, two_part

__all__ = ["EffectResult", "bootstrap", "bootstrap_count_effect", "bootstrap_indices",
           "bootstrap_two_part", "check_alpha", "count_model", "did", "its", "park_test",
           "two_part"]
