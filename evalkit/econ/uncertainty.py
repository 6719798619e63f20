"""How sure is the economic verdict? Joint bootstrap, PSA, CEAC, EVPI, one-way sensitivity.

Three tools, from the most data-driven to the most assumption-driven:

* :func:`joint_bootstrap_summary` -- paired replicate draws of the incremental cost and
  the incremental effect (e.g. from bootstrapping the outcome models on the same
  resampled members) summarised as a cost-effectiveness (CE) plane, the probability that
  the programme saves money, and the cost-effectiveness acceptability curve (CEAC).
* :func:`psa` -- probabilistic sensitivity analysis: Monte Carlo over distributions put
  on the model's inputs (:class:`Gamma` for costs, :class:`Beta` for probabilities,
  :class:`LogNormal` for ratios, :class:`Normal`, :class:`Fixed`), giving the CE plane,
  the CEAC and the expected value of perfect information (EVPI).
* :func:`one_way` -- one input at a time over a range, the others at base, shown as a
  :func:`tornado_plot`.

Definitions (two options: programme vs comparator)
--------------------------------------------------
For draw i, ``ΔC_i`` is programme minus comparator cost, ``ΔE_i`` the health gain, and the
incremental net monetary benefit at willingness to pay λ is ``INB_i(λ) = λ ΔE_i - ΔC_i``.

* CEAC(λ) = share of draws with INB_i(λ) > 0 (Fenwick, Claxton & Sculpher 2001);
* probability cost saving = share of draws with ΔC_i < 0;
* EVPI(λ) per member = mean_i max(INB_i(λ), 0) - max(mean_i INB_i(λ), 0): what removing
  all uncertainty would be worth per member, since with perfect information one could
  choose the better option draw by draw (Briggs, Claxton & Sculpher 2006, ch. 6).
  Population EVPI multiplies by the number of members the decision affects.

These are a few lines of numpy each; no scientific-Python library implements the CEAC or
EVPI, so they are written here. Random draws come from scipy.stats distributions fed a
``numpy.random.Generator`` built from the seed.

References
----------
Briggs A, Claxton K, Sculpher M (2006). *Decision Modelling for Health Economic
Evaluation*. Oxford University Press (ch. 4: choosing distributions by the method of
moments; ch. 5: presenting PSA results, CEACs; ch. 6: value of information).
Fenwick E, Claxton K, Sculpher M (2001). Representing uncertainty: the role of
cost-effectiveness acceptability curves. *Health Econ* 10(8):779-787.
Briggs AH, O'Brien BJ, Blackhouse G (2002). Thinking outside the box: recent advances in
the analysis and presentation of uncertainty in cost-effectiveness studies. *Annu Rev
Public Health* 23:377-401.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from evalkit.econ.costbenefit import ICERResult, _real, icer
from evalkit.errors import DataDroppedWarning, DataValidationError, ParamsError
from evalkit.models.base import RecordsEffect, TermTable
from evalkit.models.bootstrap import replicate_fields

__all__ = [
    "Gamma", "Beta", "LogNormal", "Normal", "Fixed", "Empirical",
    "JointBootstrapSummary", "joint_bootstrap_summary",
    "PSAResult", "psa",
    "OneWayResult", "one_way",
    "ce_plane_plot", "ceac_plot", "tornado_plot",
    "DEFAULT_WTP",
]

#: Default willingness-to-pay grid: $0 to $5,000 per unit of effect in $50 steps.
DEFAULT_WTP = np.arange(0.0, 5000.0 + 1e-9, 50.0)



# --------------------------------------------------------------------------------------
# input distributions
# --------------------------------------------------------------------------------------
class _Dist:
    """Common behaviour: draw with a Generator, central interval, a one-line description."""

    def frozen(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.asarray(self.frozen().rvs(size=n, random_state=rng), dtype=float)

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        a = (1 - level) / 2
        f = self.frozen()
        return float(f.ppf(a)), float(f.ppf(1 - a))



@dataclass(frozen=True)
class Gamma(_Dist):
    """Gamma distribution for a cost (non-negative, right-skewed), by mean and SD.

    Method of moments: shape k = (mean / sd)^2, scale θ = sd^2 / mean, so that
    k θ = mean and k θ^2 = sd^2.

    >>> Gamma(100, 50).shape, Gamma(100, 50).scale
    (4.0, 25.0)
    """

    mean: float
    sd: float

    def __post_init__(self):
        object.__setattr__(self, "mean", _real("Gamma mean", self.mean, low=0, low_open=True,
                                                hint="A gamma input is a cost: mean > 0."))
        object.__setattr__(self, "sd", _real("Gamma sd", self.sd, low=0, low_open=True))

    @property
    def shape(self) -> float:
        return (self.mean / self.sd) ** 2

    @property
    def scale(self) -> float:
        return self.sd ** 2 / self.mean

    def frozen(self):
        return stats.gamma(a=self.shape, scale=self.scale)

    def describe(self) -> str:
        return f"Gamma(mean={self.mean:g}, sd={self.sd:g}; shape={self.shape:.4g}, scale={self.scale:.4g})"


@dataclass(frozen=True, init=False)
class Beta(_Dist):
    """Beta distribution for a probability (uptake, a share), three ways to give it.

    * ``Beta(mean=0.4, sd=0.05)`` -- method of moments:
      a = m (m (1 - m) / sd^2 - 1), b = (1 - m)(m (1 - m) / sd^2 - 1); needs
      sd^2 < m (1 - m).
    * ``Beta(events=44, n=74)`` -- from counts: a = events, b = n - events (the
      posterior under an improper Beta(0, 0) prior; Briggs et al. 2006, ch. 4).
    * ``Beta(a=2, b=3)`` -- directly.

    >>> b = Beta(mean=0.5, sd=0.1); (round(b.a, 10), round(b.b, 10))
    (12.0, 12.0)
    """

    a: float
    b: float

    def __init__(self, mean=None, sd=None, *, events=None, n=None, a=None, b=None):
        ways = [mean is not None or sd is not None, events is not None or n is not None,
                a is not None or b is not None]
        if sum(ways) != 1:
            raise ParamsError("Beta takes exactly one of: mean= and sd=; events= and n=; a= and b=.")
        if ways[0]:
            if mean is None or sd is None:
                raise ParamsError("Beta(mean=, sd=) needs both the mean and the SD.")
            m = _real("Beta mean", mean, low=0, high=1, low_open=True, high_open=True)
            s = _real("Beta sd", sd, low=0, low_open=True)
            if s ** 2 >= m * (1 - m):
                raise ParamsError(f"Beta sd must satisfy sd^2 < mean(1 - mean) = {m * (1 - m):.4g} "
                                  f"(got sd = {s:g}); a probability cannot vary that much.")
            common = m * (1 - m) / s ** 2 - 1
            aa, bb = m * common, (1 - m) * common
        elif ways[1]:
            if events is None or n is None:
                raise ParamsError("Beta(events=, n=) needs both the count and the total.")
            ev = _real("Beta events", events, low=0, low_open=True)
            nn = _real("Beta n", n, low=0, low_open=True)
            if ev >= nn:
                raise ParamsError(f"Beta needs 0 < events < n, got events={ev:g}, n={nn:g}.")
            aa, bb = ev, nn - ev
        else:
            if a is None or b is None:
                raise ParamsError("Beta(a=, b=) needs both shape parameters.")
            aa = _real("Beta a", a, low=0, low_open=True)
            bb = _real("Beta b", b, low=0, low_open=True)
        object.__setattr__(self, "a", float(aa))
        object.__setattr__(self, "b", float(bb))

    def frozen(self):
        return stats.beta(self.a, self.b)

    def describe(self) -> str:
        return f"Beta(a={self.a:.4g}, b={self.b:.4g})"


@dataclass(frozen=True)
class LogNormal(_Dist):
    """Log-normal distribution for a ratio (rate ratio, cost ratio), from estimate and CI.

    log X ~ Normal(log(estimate), σ) with σ = (log(ci_high) - log(ci_low)) / (2 z), z the
    normal quantile of the interval's level (1.96 for 95%). The estimate is the median
    of X (the mean is estimate · exp(σ²/2)).

    >>> round(LogNormal(0.82, 0.70, 0.96).sdlog, 6)
    0.080576
    """

    estimate: float
    ci_low: float
    ci_high: float
    level: float = 0.95

    def __post_init__(self):
        for k in ("estimate", "ci_low", "ci_high"):
            object.__setattr__(self, k, _real(f"LogNormal {k}", getattr(self, k), low=0,
                                              low_open=True, hint="Ratios are positive."))
        object.__setattr__(self, "level", _real("LogNormal level", self.level, low=0, high=1,
                                                low_open=True, high_open=True))
        if not self.ci_low < self.estimate < self.ci_high:
            raise ParamsError(f"LogNormal needs ci_low < estimate < ci_high, got "
                              f"{self.ci_low:g}, {self.estimate:g}, {self.ci_high:g}.")

    @property
    def meanlog(self) -> float:
        return math.log(self.estimate)

    @property
    def sdlog(self) -> float:
        z = float(stats.norm.ppf(0.5 + self.level / 2))
        return (math.log(self.ci_high) - math.log(self.ci_low)) / (2 * z)

    def frozen(self):
        return stats.lognorm(s=self.sdlog, scale=self.estimate)

    def describe(self) -> str:
        return (f"LogNormal(estimate={self.estimate:g}, {self.level:.0%} CI {self.ci_low:g}-"
                f"{self.ci_high:g}; sdlog={self.sdlog:.4g})")


@dataclass(frozen=True)
class Normal(_Dist):
    """Normal distribution, for quantities that can be negative (a cost difference)."""

    mean: float
    sd: float

    def __post_init__(self):
        object.__setattr__(self, "mean", _real("Normal mean", self.mean))
        object.__setattr__(self, "sd", _real("Normal sd", self.sd, low=0, low_open=True))

    def frozen(self):
        return stats.norm(loc=self.mean, scale=self.sd)

    def describe(self) -> str:
        return f"Normal(mean={self.mean:g}, sd={self.sd:g})"


@dataclass(frozen=True)
class Fixed(_Dist):
    """A value held fixed (plain numbers in ``psa`` inputs become ``Fixed``)."""

    value: float

    def __post_init__(self):
        object.__setattr__(self, "value", _real("Fixed value", self.value))

    def draw(self, rng, n):
        return np.full(n, self.value)

    def interval(self, level: float = 0.95):
        return self.value, self.value

    def describe(self) -> str:
        return f"Fixed({self.value:g})"


@dataclass(frozen=True, eq=False)
class Empirical(_Dist):
    """Values drawn with replacement from a given sample (e.g. bootstrap replicates).

    Each draw picks one of ``values`` with equal probability. To draw *pairs* jointly
    (the saving and the effect of the same bootstrap replicate), make the input the
    replicate number, ``Empirical(np.arange(B))``, and let the model look both up.

    >>> import numpy as np
    >>> Empirical([1.0, 2.0, 3.0]).draw(np.random.default_rng(0), 4).tolist()
    [3.0, 2.0, 2.0, 1.0]
    """

    values: np.ndarray
    label: str = ""

    def __post_init__(self):
        v = np.asarray(self.values, dtype=float).ravel()
        if v.size == 0 or not np.isfinite(v).all():
            raise ParamsError("Empirical needs one or more finite values (drop failed "
                              "replicates first).")
        object.__setattr__(self, "values", v)

    def draw(self, rng, n):
        return self.values[rng.integers(0, self.values.size, size=n)]

    def interval(self, level: float = 0.95):
        a = (1 - level) / 2
        return float(np.quantile(self.values, a)), float(np.quantile(self.values, 1 - a))

    def describe(self) -> str:
        what = f"{self.label}: " if self.label else ""
        return f"Empirical({what}{self.values.size} values, drawn with replacement)"


def _as_dist(name: str, spec) -> _Dist:
    if isinstance(spec, _Dist):
        return spec
    if isinstance(spec, (int, float, np.integer, np.floating)) and not isinstance(spec, bool):
        return Fixed(float(spec))
    raise ParamsError(f"input {name!r}: give a number or a distribution (Gamma, Beta, "
                      f"LogNormal, Normal, Fixed), got {type(spec).__name__}.")


# --------------------------------------------------------------------------------------
# shared decision summary
# --------------------------------------------------------------------------------------
def _wtp_grid(wtp) -> np.ndarray:
    lam = DEFAULT_WTP if wtp is None else np.atleast_1d(np.asarray(wtp, dtype=float))
    if lam.ndim != 1 or lam.size == 0 or not np.isfinite(lam).all() or (lam < 0).any():
        raise ParamsError(f"wtp must be one or more finite willingness-to-pay values >= 0, got {wtp!r}.")
    return lam


def _quadrant(dc: np.ndarray, de: np.ndarray) -> np.ndarray:
    q = np.full(dc.shape, "axis", dtype=object)
    q[(de > 0) & (dc > 0)] = "NE"
    q[(de > 0) & (dc < 0)] = "SE"
    q[(de < 0) & (dc < 0)] = "SW"
    q[(de < 0) & (dc > 0)] = "NW"
    return q


def _ceac(dc: np.ndarray, de: np.ndarray, lam: np.ndarray, population: float | None,
          alpha: float) -> pd.DataFrame:
    """CEAC, expected NMB with its percentile interval, and EVPI at each WTP."""
    inb = lam[:, None] * de[None, :] - dc[None, :]          # WTP x draws
    mean_inb = inb.mean(axis=1)
    evpi = np.maximum(inb, 0).mean(axis=1) - np.maximum(mean_inb, 0)
    evpi = np.maximum(evpi, 0.0)  # exact zero, not -1e-13, when one option always wins
    out = pd.DataFrame({
        "wtp": lam,
        "probability_cost_effective": (inb > 0).mean(axis=1),
        "expected_nmb": mean_inb,
        "nmb_ci_low": np.quantile(inb, alpha / 2, axis=1),
        "nmb_ci_high": np.quantile(inb, 1 - alpha / 2, axis=1),
        "evpi_per_member": evpi,
        "evpi_population": evpi * population if population is not None else np.nan,
    })
    return out


def _ce_plane(dc, de) -> pd.DataFrame:
    return pd.DataFrame({"delta_cost": dc, "delta_effect": de, "quadrant": _quadrant(dc, de)})


def _quadrant_shares(dc, de) -> pd.DataFrame:
    q = _quadrant(dc, de)
    names = ["NE", "SE", "SW", "NW", "axis"]
    return pd.DataFrame({"quadrant": names, "share": [float((q == k).mean()) for k in names]})


def _population(population) -> float | None:
    if population is None:
        return None
    return _real("population", population, low=0, low_open=True)


def _alpha(alpha) -> float:
    return _real("alpha", alpha, low=0, high=1, low_open=True, high_open=True,
                 hint="Use 0.05 for 95% intervals.")


# --------------------------------------------------------------------------------------
# joint bootstrap
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class JointBootstrapSummary(RecordsEffect):
    """Paired cost and effect replicates, summarised for a decision.

    Attributes
    ----------
    table : DataFrame
        Keyed by ``term``, rows ``delta_cost`` and ``delta_effect``: ``estimate`` (the
        point estimate given, else the replicate mean), ``mean``, ``std_error``
        (replicate SD), ``ci_low``, ``ci_high`` (percentile interval).
    ce_plane : DataFrame
        ``delta_cost, delta_effect, quadrant`` per replicate.
    ceac : DataFrame
        ``wtp, probability_cost_effective, expected_nmb, nmb_ci_low, nmb_ci_high,
        evpi_per_member, evpi_population``.
    quadrants : DataFrame
        Share of replicates in each quadrant (NE, SE, SW, NW, axis).
    probability_cost_saving : float
        Share of replicates with delta_cost < 0.
    probability_more_effective : float
        Share with delta_effect > 0.
    icer : ICERResult
        At the point estimate.
    n_draws : int
    dropped : dict
        Replicate pairs left out and why.
    """

    table: pd.DataFrame
    ce_plane: pd.DataFrame
    ceac: pd.DataFrame
    quadrants: pd.DataFrame
    probability_cost_saving: float
    probability_more_effective: float
    icer: ICERResult
    n_draws: int
    alpha: float = 0.05
    dropped: dict = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()

    def estimates(self, outcome: str = "total_cost", effect_outcome: str = "er_visits",
                  contrast: str = "self_help referral vs none", wtp=None) -> pd.DataFrame:
        """Records: ``cost_difference``, ``probability_cost_saving``, ``icer`` (when the
        point estimate is in the NE or SW quadrant) and ``nmb`` at each ``wtp`` given
        (expected NMB with its percentile interval; ``wtp`` kept as an extra column).
        Every record carries ``n_replicates`` (pairs given) and ``n_failed`` (pairs left
        out as not finite), and ``replicates_flag`` when more than 5% were left out."""
        n_failed = int(sum(self.dropped.values()))
        fields = replicate_fields(self.n_draws + n_failed, n_failed, "joint bootstrap")
        c = self.table.set_index("term").loc["delta_cost"]
        method = f"joint bootstrap, {self.n_draws} paired replicates, percentile intervals"
        rows = [{"outcome": outcome, "contrast": contrast,
                 "estimand": "incremental cost per member", "method": method,
                 "scale": "cost_difference", "estimate": c["estimate"],
                 "std_error": c["std_error"], "ci_low": c["ci_low"], "ci_high": c["ci_high"]},
                {"outcome": outcome, "contrast": contrast,
                 "estimand": "probability the programme saves money", "method": method,
                 "scale": "probability_cost_saving", "estimate": self.probability_cost_saving}]
        if self.icer.status == "icer":
            rows.append({"outcome": effect_outcome, "contrast": contrast,
                         "estimand": f"incremental cost per unit of {effect_outcome} "
                                     f"gained ({self.icer.interpretation})",
                         "method": method, "scale": "icer", "estimate": self.icer.icer})
        if wtp is not None:
            dc = self.ce_plane["delta_cost"].to_numpy()
            de = self.ce_plane["delta_effect"].to_numpy()
            e = self.at("delta_effect")
            for lam in _wtp_grid(wtp):
                inb = lam * de - dc
                rows.append({"outcome": effect_outcome, "contrast": contrast,
                             "estimand": "incremental net monetary benefit per member",
                             "method": method, "scale": "nmb",
                             "estimate": lam * e - c["estimate"],
                             "ci_low": float(np.quantile(inb, self.alpha / 2)),
                             "ci_high": float(np.quantile(inb, 1 - self.alpha / 2)),
                             "wtp": float(lam)})
        return pd.DataFrame(rows).assign(**fields)


def _draws(name: str, values) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataValidationError(f"{name} must be numeric replicate draws.") from exc
    if arr.ndim != 1:
        raise DataValidationError(f"{name} must be one-dimensional (one value per replicate), "
                                  f"got shape {arr.shape}.")
    return arr


def joint_bootstrap_summary(cost_draws, effect_draws, wtp=None, *, estimate=None,
                            alpha: float = 0.05, population: float | None = None
                            ) -> JointBootstrapSummary:
    """Summarise paired bootstrap replicates of incremental cost and effect.

    Parameters
    ----------
    cost_draws : array-like
        Replicate incremental costs per member (programme minus comparator; negative =
        saving), e.g. from refitting the cost model on each bootstrap resample.
    effect_draws : array-like
        Replicate health gains per member **from the same resamples**, in the same
        order (positive = better, e.g. ER visits averted = -(difference in ER visits)).
        Pairing keeps the correlation between cost and effect, which the CEAC needs.
    wtp : float or array-like, optional
        Willingness to pay per unit of effect for the CEAC (default
        :data:`DEFAULT_WTP`, $0-$5,000 in $50 steps).
    estimate : (delta_cost, delta_effect), optional
        Point estimates from the full sample (default: the replicate means).
    alpha : float, default 0.05
        Percentile intervals are (alpha/2, 1 - alpha/2).
    population : float, optional
        Members the decision affects, for population EVPI.

    Returns
    -------
    JointBootstrapSummary

    Notes
    -----
    Pairs with a missing value in either draw (failed refits) are dropped with a
    :class:`~evalkit.errors.DataDroppedWarning` and counted in ``dropped``. See the
    module docstring for the CEAC and EVPI definitions. The ICER's own bootstrap
    interval is not given: a ratio whose denominator can cross zero has no useful
    percentile interval (use the CEAC instead; Briggs et al. 2002).

    Examples
    --------
    >>> s = joint_bootstrap_summary([-100, 50, -20, 10], [0.1, 0.05, -0.02, 0.08], wtp=[0, 1000])
    >>> s.probability_cost_saving
    0.5
    """
    dc = _draws("cost_draws", cost_draws)
    de = _draws("effect_draws", effect_draws)
    if dc.size != de.size:
        raise DataValidationError(f"cost_draws and effect_draws must be paired draws of the same "
                                  f"length, got {dc.size} and {de.size}.")
    alpha = _alpha(alpha)
    lam = _wtp_grid(wtp)
    pop = _population(population)
    bad = ~(np.isfinite(dc) & np.isfinite(de))
    dropped = {}
    if bad.any():
        dropped["non_finite_replicate"] = int(bad.sum())
        warnings.warn(f"joint_bootstrap_summary: {int(bad.sum())} of {dc.size} replicate pairs had "
                      "a missing or infinite cost or effect (failed refits?) and were left out.",
                      DataDroppedWarning, stacklevel=2)
        dc, de = dc[~bad], de[~bad]
    if dc.size < 2:
        raise DataValidationError(f"joint_bootstrap_summary needs at least 2 usable replicate "
                                  f"pairs, got {dc.size}.")
    if estimate is None:
        point = (float(dc.mean()), float(de.mean()))
    else:
        try:
            c0, e0 = estimate
        except (TypeError, ValueError) as exc:
            raise ParamsError("estimate must be a pair (delta_cost, delta_effect).") from exc
        point = (_real("estimate[0]", c0), _real("estimate[1]", e0))
    table = pd.DataFrame({
        "term": ["delta_cost", "delta_effect"],
        "estimate": list(point),
        "mean": [dc.mean(), de.mean()],
        "std_error": [dc.std(ddof=1), de.std(ddof=1)],
        "ci_low": [np.quantile(dc, alpha / 2), np.quantile(de, alpha / 2)],
        "ci_high": [np.quantile(dc, 1 - alpha / 2), np.quantile(de, 1 - alpha / 2)],
    })
    return JointBootstrapSummary(
        table=table, ce_plane=_ce_plane(dc, de), ceac=_ceac(dc, de, lam, pop, alpha),
        quadrants=_quadrant_shares(dc, de),
        probability_cost_saving=float((dc < 0).mean()),
        probability_more_effective=float((de > 0).mean()),
        icer=icer(*point), n_draws=int(dc.size), alpha=alpha, dropped=dropped)


# --------------------------------------------------------------------------------------
# probabilistic sensitivity analysis
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PSAResult(RecordsEffect):
    """A probabilistic sensitivity analysis, as a value.

    Attributes
    ----------
    table : DataFrame
        Every input and output, keyed by ``term`` (its name): ``term, kind
        (input/output), distribution, estimate, std_error, ci_low, ci_high`` -- the
        mean, the SD and the 2.5th and 97.5th percentiles of the draws.
    draws : DataFrame
        One row per draw: the inputs, ``delta_cost``, ``delta_effect`` and any other
        outputs the model returned.
    ce_plane : DataFrame
        ``delta_cost, delta_effect, quadrant`` per draw.
    ceac : DataFrame
        ``wtp, probability_cost_effective, expected_nmb, nmb_ci_low, nmb_ci_high,
        evpi_per_member, evpi_population``.
    quadrants : DataFrame
    probability_cost_saving : float
    n : int
    seed : int
        The seed used (drawn from fresh entropy and recorded when none was given), so
        ``psa(..., seed=result.seed)`` repeats the draws exactly.
    population : float or None
    """

    table: pd.DataFrame
    draws: pd.DataFrame
    ce_plane: pd.DataFrame
    ceac: pd.DataFrame
    quadrants: pd.DataFrame
    probability_cost_saving: float
    n: int
    seed: int
    population: float | None = None

    @property
    def evpi(self) -> pd.DataFrame:
        """``wtp, evpi_per_member, evpi_population``."""
        return self.ceac[["wtp", "evpi_per_member", "evpi_population"]].copy()

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()

    def estimates(self, outcome: str = "total_cost",
                  contrast: str = "self_help referral vs none") -> pd.DataFrame:
        """Records: ``cost_difference`` (mean and 95% interval of the draws) and
        ``probability_cost_saving``."""
        c = self.table.set_index("term").loc["delta_cost"]
        method = f"PSA, {self.n} Monte Carlo draws (seed {self.seed})"
        return pd.DataFrame([
            {"outcome": outcome, "contrast": contrast, "estimand": "incremental cost per member",
             "method": method, "scale": "cost_difference", "estimate": c["estimate"],
             "std_error": c["std_error"], "ci_low": c["ci_low"], "ci_high": c["ci_high"]},
            {"outcome": outcome, "contrast": contrast,
             "estimand": "probability the programme saves money", "method": method,
             "scale": "probability_cost_saving", "estimate": self.probability_cost_saving}])


def _model_outputs(out, n: int) -> dict[str, np.ndarray]:
    if isinstance(out, Mapping):
        res = dict(out)
    elif isinstance(out, (tuple, list)) and len(out) == 2:
        res = {"delta_cost": out[0], "delta_effect": out[1]}
    else:
        raise ParamsError("model must return a mapping with 'delta_cost' and 'delta_effect' "
                          "(plus any other outputs) or a pair (delta_cost, delta_effect); "
                          f"got {type(out).__name__}.")
    missing = {"delta_cost", "delta_effect"} - set(res)
    if missing:
        raise ParamsError(f"model output lacks {sorted(missing)}; return delta_cost (programme "
                          "minus comparator cost) and delta_effect (health gain).")
    clean = {}
    for k, v in res.items():
        arr = np.asarray(v, dtype=float)
        if arr.ndim == 0:
            arr = np.full(n, float(arr))
        if arr.shape != (n,):
            raise ParamsError(f"model output {k!r} has shape {arr.shape}; expected one value per "
                              f"draw ({n},). Is the model vectorised? If not, pass vectorized=False.")
        clean[str(k)] = arr
    return clean


def psa(inputs: Mapping[str, object], model: Callable, n: int = 1000, seed: int | None = None,
        *, wtp=None, population: float | None = None, vectorized: bool = True,
        alpha: float = 0.05) -> PSAResult:
    """Probabilistic sensitivity analysis by Monte Carlo simulation.

    Each input gets a distribution; ``n`` joint draws are pushed through ``model``; the
    resulting incremental costs and effects give the CE plane, the CEAC and the EVPI.

    Parameters
    ----------
    inputs : mapping name -> distribution or number
        :class:`Gamma` (costs, by mean and SD), :class:`Beta` (probabilities, by mean and
        SD or by counts), :class:`LogNormal` (ratios, by estimate and 95% CI),
        :class:`Normal`, :class:`Fixed`; a plain number is held fixed. Inputs are drawn
        independently, in the order given.
    model : callable
        ``model(params) -> {"delta_cost": ..., "delta_effect": ..., ...}`` or a pair
        ``(delta_cost, delta_effect)``. With ``vectorized=True`` (default) ``params``
        maps each name to an array of all ``n`` draws and the model returns arrays;
        with ``vectorized=False`` it is called once per draw with floats. Extra outputs
        (e.g. ``"roi"``) are kept in ``draws``.
    n : int, default 1000
        Number of draws.
    seed : int, optional
        Seed of the ``numpy.random.Generator``: the same seed gives identical draws.
    wtp : float or array-like, optional
        Willingness-to-pay grid (default :data:`DEFAULT_WTP`).
    population : float, optional
        Members the decision affects over its lifetime, for population EVPI.
    vectorized : bool, default True
    alpha : float, default 0.05
        For the NMB intervals in ``ceac``.

    Returns
    -------
    PSAResult

    Examples
    --------
    >>> def model(p):
    ...     dc = p["cost"] - p["uptake"] * p["saving"]
    ...     return {"delta_cost": dc, "delta_effect": p["uptake"] * 0.063}
    >>> res = psa({"cost": Gamma(150, 30), "uptake": Beta(events=40, n=100),
    ...            "saving": Normal(1846, 400)}, model, n=2000, seed=1)
    >>> 0 <= res.probability_cost_saving <= 1
    True
    """
    if not isinstance(inputs, Mapping) or not inputs:
        raise ParamsError("inputs must be a non-empty mapping of name -> distribution or number.")
    if not callable(model):
        raise ParamsError("model must be a function of the input values.")
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ParamsError(f"n must be a whole number of draws >= 2, got {n!r}.")
    n = int(n)
    alpha = _alpha(alpha)
    lam = _wtp_grid(wtp)
    pop = _population(population)
    dists = {str(k): _as_dist(str(k), v) for k, v in inputs.items()}
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2 ** 63))
    elif isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParamsError(f"seed must be a non-negative integer, got {seed!r}.")
    rng = np.random.default_rng(int(seed))
    params = {k: d.draw(rng, n) for k, d in dists.items()}

    if vectorized:
        out = _model_outputs(model({k: v.copy() for k, v in params.items()}), n)
    else:
        per = [model({k: float(v[i]) for k, v in params.items()}) for i in range(n)]
        first = _model_outputs(per[0], 1)
        cols = {k: np.empty(n) for k in first}
        for i, o in enumerate(per):
            oi = _model_outputs(o, 1)
            for k in cols:
                cols[k][i] = oi[k][0]
        out = cols
    for k, v in out.items():
        if not np.isfinite(v).all():
            raise DataValidationError(f"model returned {int((~np.isfinite(v)).sum())} missing or "
                                      f"infinite values of {k!r}; check the model for divisions "
                                      "by a drawn value that can be zero.")
    clash = set(out) & set(params)
    if clash:
        raise ParamsError(f"model outputs {sorted(clash)} have the same names as inputs; rename them.")
    draws = pd.DataFrame({**params, **out})
    dc, de = out["delta_cost"], out["delta_effect"]

    rows = []
    for k, v in {**params, **out}.items():
        kind = "input" if k in params else "output"
        rows.append({"term": k, "kind": kind,
                     "distribution": dists[k].describe() if kind == "input" else "",
                     "estimate": float(v.mean()), "std_error": float(v.std(ddof=1)),
                     "ci_low": float(np.quantile(v, 0.025)),
                     "ci_high": float(np.quantile(v, 0.975))})
    return PSAResult(table=pd.DataFrame(rows), draws=draws, ce_plane=_ce_plane(dc, de),
                     ceac=_ceac(dc, de, lam, pop, alpha), quadrants=_quadrant_shares(dc, de),
                     probability_cost_saving=float((dc < 0).mean()), n=n, seed=int(seed),
                     population=pop)


# --------------------------------------------------------------------------------------
# one-way sensitivity
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class OneWayResult(TermTable):
    """One-way sensitivity analysis.

    Attributes
    ----------
    table : DataFrame
        One row per input, keyed by ``term`` (the input's name), widest swing first:
        ``term, base_value, low, high, output_at_low, output_at_high, swing``
        (|output_at_high - output_at_low|). A ``parameter`` column, when present,
        holds the label :func:`tornado_plot` shows instead of the name.
    base_output : float
        The output with every input at its base value.
    output : str
        Name of the output analysed.
    """

    table: pd.DataFrame
    base_output: float
    output: str = "output"

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()


def _pick(out, output: str | None) -> float:
    if isinstance(out, Mapping):
        if output is None:
            raise ParamsError(f"model returns several outputs {sorted(out)}; name one with output=.")
        if output not in out:
            raise ParamsError(f"output {output!r} is not among the model's outputs {sorted(out)}.")
        out = out[output]
    try:
        v = float(out)
    except (TypeError, ValueError) as exc:
        raise ParamsError("model must return a number (or a mapping and output= naming one).") from exc
    return v


def one_way(model: Callable, base: Mapping[str, float], ranges: Mapping[str, object], *,
            output: str | None = None, level: float = 0.95) -> OneWayResult:
    """One-way sensitivity: vary each input over its range, the others held at base.

    Parameters
    ----------
    model : callable
        ``model(params) -> float`` (or a mapping of outputs, with ``output=`` naming the
        one to analyse), ``params`` a dict of floats.
    base : mapping name -> float
        Base-case value of every input the model reads.
    ranges : mapping name -> (low, high) or distribution
        The inputs to vary. A distribution stands for its central ``level`` interval
        (2.5th and 97.5th percentiles by default), so the PSA inputs can be reused.
    output : str, optional
    level : float, default 0.95

    Returns
    -------
    OneWayResult
        Draw it with :func:`tornado_plot`.

    Examples
    --------
    >>> f = lambda p: p["uptake"] * p["saving"] - p["cost"]
    >>> r = one_way(f, {"uptake": 0.4, "saving": 1846, "cost": 150},
    ...             {"uptake": (0.2, 0.6), "cost": (100, 200)})
    >>> r.table["term"].tolist()
    ['uptake', 'cost']
    """
    if not callable(model):
        raise ParamsError("model must be a function of the input values.")
    if not isinstance(base, Mapping) or not base:
        raise ParamsError("base must be a non-empty mapping of input name -> base value.")
    if not isinstance(ranges, Mapping) or not ranges:
        raise ParamsError("ranges must be a non-empty mapping of input name -> (low, high).")
    base = {str(k): _real(f"base[{k!r}]", v) for k, v in base.items()}
    level = _real("level", level, low=0, high=1, low_open=True, high_open=True)
    unknown = [k for k in ranges if k not in base]
    if unknown:
        raise ParamsError(f"ranges names inputs without a base value: {unknown}; base has "
                          f"{sorted(base)}.")
    y0 = _pick(model(dict(base)), output)
    rows = []
    for k, spec in ranges.items():
        if isinstance(spec, _Dist):
            lo, hi = spec.interval(level)
        else:
            try:
                lo, hi = spec
            except (TypeError, ValueError) as exc:
                raise ParamsError(f"ranges[{k!r}] must be (low, high) or a distribution.") from exc
            lo, hi = _real(f"ranges[{k!r}] low", lo), _real(f"ranges[{k!r}] high", hi)
            if lo > hi:
                raise ParamsError(f"ranges[{k!r}] must be (low, high) with low <= high, got "
                                  f"({lo:g}, {hi:g}).")
        at = []
        for v in (lo, hi):
            p = dict(base)
            p[k] = v
            at.append(_pick(model(p), output))
        rows.append({"term": k, "base_value": base[k], "low": lo, "high": hi,
                     "output_at_low": at[0], "output_at_high": at[1],
                     "swing": abs(at[1] - at[0])})
    table = pd.DataFrame(rows).sort_values("swing", ascending=False, kind="stable")
    return OneWayResult(table=table.reset_index(drop=True), base_output=y0,
                        output=output or "output")


# --------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------
def ce_plane_plot(result, ax=None, wtp: float | None = None, max_points: int = 5000,
                  effect_label: str = "health gain per member",
                  cost_label: str = "incremental cost per member ($)"):
    """Cost-effectiveness plane: one point per draw, the mean, and an optional WTP line.

    Parameters
    ----------
    result : PSAResult or JointBootstrapSummary
    ax : matplotlib Axes, optional
    wtp : float, optional
        Draws a line of slope ``wtp`` through the origin: points below it are
        cost-effective at that willingness to pay.
    max_points : int, default 5000
        At most this many draws are plotted (an evenly spaced subset).

    Returns
    -------
    matplotlib Axes
    """

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5))
    plane = result.ce_plane
    step = max(1, math.ceil(len(plane) / max_points))
    sub = plane.iloc[::step]
    ax.scatter(sub["delta_effect"], sub["delta_cost"], s=6, alpha=0.35, color="#2166ac",
               linewidths=0, label="draws")
    ax.scatter([plane["delta_effect"].mean()], [plane["delta_cost"].mean()], s=60, marker="D",
               color="black", zorder=3, label="mean")
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    if wtp is not None:
        x = np.array(ax.get_xlim())
        ax.plot(x, wtp * x, color="#b2182b", ls="--", lw=1, label=f"WTP = {wtp:,.0f}")
        ax.set_xlim(*x)
    ax.set_xlabel(effect_label)
    ax.set_ylabel(cost_label)
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return ax


def ceac_plot(result, ax=None, evpi: bool = False,
              wtp_label: str = "willingness to pay per unit of effect ($)"):
    """Cost-effectiveness acceptability curve (and, optionally, per-member EVPI on a twin axis).

    Parameters
    ----------
    result : PSAResult or JointBootstrapSummary
    ax : matplotlib Axes, optional
    evpi : bool, default False
        Also draw EVPI per member against the right-hand axis.

    Returns
    -------
    matplotlib Axes
    """

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.8))
    c = result.ceac
    ax.plot(c["wtp"], c["probability_cost_effective"], color="#1b7837", lw=2)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(wtp_label)
    ax.set_ylabel("probability cost-effective")
    ax.spines[["top"]].set_visible(False)
    if evpi:
        ax2 = ax.twinx()
        ax2.plot(c["wtp"], c["evpi_per_member"], color="#762a83", ls="--", lw=1.2)
        ax2.set_ylabel("EVPI per member ($)", color="#762a83")
        ax2.spines[["top"]].set_visible(False)
    return ax


def tornado_plot(result: OneWayResult, ax=None, max_bars: int | None = None,
                 xlabel: str | None = None):
    """Tornado diagram of a one-way sensitivity analysis, widest swing on top.

    Bars run from the base-case output to the output at each end of the input's range
    (dark: low end, light: high end), labelled ``name (low - high)``, the name being
    the table's ``parameter`` label when it has one, else its ``term``.

    Returns
    -------
    matplotlib Axes
    """

    t = result.table if max_bars is None else result.table.head(max_bars)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.45 * len(t) + 1.2))
    y = np.arange(len(t))[::-1]
    b = result.base_output
    ax.barh(y, t["output_at_low"] - b, left=b, color="#2166ac", label="input at low end")
    ax.barh(y, t["output_at_high"] - b, left=b, color="#92c5de", label="input at high end")
    ax.axvline(b, color="black", lw=0.8)
    ax.set_yticks(y, [f"{p} ({lo:,.4g} - {hi:,.4g})" for p, lo, hi in
                      zip(t.get("parameter", t["term"]), t["low"], t["high"])])
    ax.set_xlabel(xlabel or result.output)
    ax.legend(frameon=False, fontsize=8, loc="best")
    ax.spines[["top", "right"]].set_visible(False)
    return ax
