"""Health economics for a plan's finance committee.

* :mod:`~evalkit.econ.costbenefit` -- :class:`ProgramCosts`, :func:`cost_benefit` (savings,
  ROI, benefit-cost ratio, payback, break-even), :func:`icer`, :func:`nmb`;
* :mod:`~evalkit.econ.uncertainty` -- :func:`joint_bootstrap_summary`, :func:`psa` with
  :class:`Gamma`, :class:`Beta`, :class:`LogNormal`, :class:`Normal`, :class:`Fixed`,
  :class:`Empirical` inputs, CEAC and EVPI, :func:`one_way`, and the plots :func:`ce_plane_plot`,
  :func:`ceac_plot`, :func:`tornado_plot`;
* :mod:`~evalkit.econ.budget` -- :func:`budget_impact` (ISPOR good practice);
* :mod:`~evalkit.econ.power` -- :func:`nb_sample_size`, :func:`nb_power`, :func:`nb_mde`
  (Zhu & Lakkis 2014).

Results that become records in ``results.json`` use the scales ``cost_difference``,
``pmpm_difference``, ``net_savings_per_member``, ``roi``, ``benefit_cost_ratio``, ``icer``,
``nmb`` and ``probability_cost_saving`` (each result's ``estimates()`` method).
"""
from evalkit.econ.budget import BudgetImpactResult, budget_impact
from evalkit.econ.costbenefit import (
    CostBenefitResult,
    ICERResult,
    NMBResult,
    ProgramCosts,
    cost_benefit,
    icer,
    nmb,
)
from evalkit.econ.power import NBMDE, NBPower, NBSampleSize, nb_mde, nb_power, nb_sample_size
from evalkit.econ.uncertainty import (
    DEFAULT_WTP,
    Beta,
    Empirical,
    Fixed,
    Gamma,
    JointBootstrapSummary,
    LogNormal,
    Normal,
    OneWayResult,
    PSAResult,
    ce_plane_plot,
    ceac_plot,
    joint_bootstrap_summary,
    one_way,
    psa,
    tornado_plot,
)

__all__ = [
    "ProgramCosts", "CostBenefitResult", "cost_benefit", "ICERResult", "icer", "NMBResult", "nmb",
    "Gamma", "Beta", "LogNormal", "Normal", "Fixed", "Empirical", "DEFAULT_WTP",
    "JointBootstrapSummary", "joint_bootstrap_summary", "PSAResult", "psa",
    "OneWayResult", "one_way", "ce_plane_plot", "ceac_plot", "tornado_plot",
    "BudgetImpactResult", "budget_impact",
    "NBSampleSize", "NBPower", "NBMDE", "nb_sample_size", "nb_power", "nb_mde",
]
