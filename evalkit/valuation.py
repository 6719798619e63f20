"""What the measured cost effect is worth to the plan: savings, program cost, ROI, and
the chance the program saves money, from the costs workbook's estimate and the program
cost inputs in the params (``econ``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .econ import Beta, Fixed, Gamma, Normal, ProgramCosts, cost_benefit, psa
from .errors import DataValidationError


@dataclass(frozen=True)
class Valuation:
    """Savings and program economics per referred member.

    Attributes
    ----------
    savings : dict
        Gross saving in professional care per referred member per year (estimate, ci_low,
        ci_high, std_error), from the adjusted cost difference (sign flipped, annualised).
    cost_benefit : CostBenefitResult
        Net savings, ROI, benefit-cost ratio, payback, break-even (at the estimate and at
        the savings' CI limits).
    psa : PSAResult
        Monte Carlo over the saving (normal, from its standard error), uptake (beta) and
        program cost (gamma): net savings draws and the probability of saving money.
    headline : DataFrame
        The figures a finance committee asks for, with 95% intervals.
    """

    savings: dict
    cost_benefit: object
    psa: object
    headline: pd.DataFrame
    inputs: pd.DataFrame

    def estimates(self) -> pd.DataFrame:
        """Records for results.json: the cost-benefit figures (net savings with the PSA's
        95% interval, which carries the uncertainty of both saving and program cost) and
        the probability that the program saves money."""
        rec = self.cost_benefit.estimates()
        net = self.headline.set_index("figure").filter(like="net savings", axis=0).iloc[0]
        i = rec.index[rec["scale"] == "net_savings_per_member"]
        rec.loc[i, ["ci_low", "ci_high"]] = [net["ci_low"], net["ci_high"]]
        rec.loc[i, "method"] = rec.loc[i, "method"] + "; interval from the probabilistic sensitivity analysis"
        p = self.psa.probability_cost_saving
        prob = {"outcome": "total_cost", "contrast": rec["contrast"].iloc[0],
                "estimand": "probability that net savings > 0",
                "method": f"probabilistic sensitivity analysis, {len(self.psa.draws)} draws",
                "scale": "probability_cost_saving", "estimate": p}
        return pd.concat([rec, pd.DataFrame([prob])], ignore_index=True)


def value_program(cost_records: pd.DataFrame, econ, referred_members: int, followup_days: int,
                  seed: int) -> Valuation:
    """Turn the adjusted cost difference into program economics.

    ``cost_records`` are the costs workbook's effect records (a ``cost_difference`` row
    over the follow-up window); ``econ`` the params' economics section. The saving per
    referred member per year is ``-cost_difference * 365 / followup_days``; the measured
    effect already reflects how many referred members took part, so ``econ.uptake``
    (default 1) should stay 1 unless the saving was measured among participants.
    """
    row = cost_records[cost_records["scale"] == "cost_difference"]
    if row.empty:
        raise DataValidationError("no cost_difference estimate to value; run the costs workbook's "
                                  "model first")
    r = row.iloc[0]
    year = 365.0 / followup_days
    savings = {"estimate": -r["estimate"] * year, "ci_low": -r["ci_high"] * year,
               "ci_high": -r["ci_low"] * year, "std_error": r["std_error"] * year}
    costs = ProgramCosts(uptake=econ.uptake, coordination=econ.coordination,
                         facilitation=econ.facilitation, materials=econ.materials,
                         fixed_startup=econ.fixed_startup, horizon_years=econ.horizon_years,
                         discount_rate=econ.discount_rate, perspective=econ.perspective)
    cb = cost_benefit(savings["estimate"], costs, members=referred_members,
                      savings_ci=(savings["ci_low"], savings["ci_high"]))
    per_ref = costs.cost_per_referred
    inputs = {
        "saving": Normal(savings["estimate"], savings["std_error"]),
        "uptake": Beta(mean=econ.uptake, sd=econ.uptake_sd) if econ.uptake_sd > 0 else Fixed(econ.uptake),
        "cost_per_referred": Gamma(per_ref, per_ref * econ.cost_uncertainty)
        if per_ref > 0 and econ.cost_uncertainty > 0 else Fixed(per_ref),
    }
    startup = econ.fixed_startup / referred_members
    factors = costs.discount_factors
    annuity = float(np.sum(factors))

    def model(p):
        net = (p["uptake"] * p["saving"] - p["cost_per_referred"]) * annuity - startup
        return {"delta_cost": -net, "delta_effect": np.zeros_like(net), "net_savings": net}

    sim = psa(inputs, model, n=econ.psa_draws, seed=seed)
    net = sim.draws["net_savings"].to_numpy()
    lo, hi = np.percentile(net, [2.5, 97.5])
    headline = pd.DataFrame([
        {"figure": "gross savings per referred member per year", "estimate": savings["estimate"],
         "ci_low": savings["ci_low"], "ci_high": savings["ci_high"]},
        {"figure": "program cost per referred member (incl. start-up share)",
         "estimate": per_ref * annuity + startup, "ci_low": np.nan, "ci_high": np.nan},
        {"figure": f"net savings per referred member over {econ.horizon_years} year(s)",
         "estimate": cb.net_savings_per_member, "ci_low": lo, "ci_high": hi},
        {"figure": "return on investment", "estimate": cb.roi, "ci_low": np.nan, "ci_high": np.nan},
        {"figure": "probability the program saves money", "estimate": sim.probability_cost_saving,
         "ci_low": np.nan, "ci_high": np.nan},
    ])
    described = pd.DataFrame([{"input": k, "distribution": v.describe() if hasattr(v, "describe")
                               else repr(v)} for k, v in inputs.items()])
    return Valuation(savings, cb, sim, headline, described)
