"""Seeded synthetic person-level scenarios: one row per person (or per group).

Some published studies that motivate evalkit are not about health-plan claims but about
people (or groups) followed over time. No member-level data of those studies are
available, so these generators write data *shaped like* them: the same sizes, and
distributions whose expected values are the published figures. The true values are
parameters, kept in ``truth`` next to the data, so a workbook's estimates can be held
against them.

Scenarios
---------
``support_group_survival``
    Shaped like the randomized supportive-expressive group study (Spiegel et al., Lancet
    1989): 50 women with metastatic breast cancer randomized to weekly support groups and
    36 controls; mean survival 36.6 vs 18.9 months. One row per woman. See
    :func:`support_group_survival`.
``group_types``
    Shaped like the survey of self-help groups of parents of children with cancer (Yoak &
    Chesler 1985): 50 groups of three leadership types (run by professional staff,
    independent of staff, shared leadership); shared-leadership groups were larger, lasted
    longer and ran more kinds of activities. One row per *group*. See :func:`group_types`.

Every draw comes from ``numpy.random.Generator`` streams spawned from one
``SeedSequence(seed)``, one stream per quantity, so the same seed and options give the
same file bit for bit, and changing one quantity's options never reshuffles another's.
"""
from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from scipy import optimize, special

from ..errors import ParamsError

__all__ = ["SyntheticPersons", "support_group_survival", "group_types", "generate", "write",
           "true_restricted_mean", "PERSON_SCENARIOS"]


@dataclass(frozen=True)
class SyntheticPersons:
    """A generated person-level (or group-level) data set.

    Attributes
    ----------
    frame : DataFrame
        What is written to the file: one row per unit, only what an analyst would see.
    truth : dict
        The scenario's parameters, the seed and the population values (expected means,
        restricted means, medians, hazard ratios) the data were drawn to reproduce.
    latent : DataFrame
        Quantities an analyst would never see, aligned with ``frame`` (e.g. each person's
        survival time before censoring). Kept for checking the generator; not written.
    """

    frame: pd.DataFrame
    truth: dict
    latent: pd.DataFrame = field(repr=False)


def _streams(seed: int, names: list[str]) -> dict[str, np.random.Generator]:
    children = np.random.SeedSequence(int(seed)).spawn(len(names))
    return {name: np.random.default_rng(child) for name, child in zip(names, children)}


def _weibull_restricted_mean(scale: float, shape: float, tau: float) -> float:
    """``int_0^tau exp(-(t/scale)^shape) dt`` in closed form (regularized lower incomplete
    gamma): ``scale * Gamma(1 + 1/shape) * P(1/shape, (tau/scale)^shape)``."""
    return float(scale * special.gamma(1 + 1 / shape)
                 * special.gammainc(1 / shape, (tau / scale) ** shape))


def _check_positive(**values) -> None:
    for name, v in values.items():
        if not np.all(np.asarray(v, dtype=float) > 0):
            raise ParamsError(f"data.scenario_options.{name} must be positive (got {v!r}).")


# --------------------------------------------------------------------------------------
# support-group survival (Spiegel et al. 1989)
# --------------------------------------------------------------------------------------
def support_group_survival(seed: int = 19891014, n_treated: int = 50, n_control: int = 36,
                           mean_months_treated: float = 36.6, mean_months_control: float = 18.9,
                           weibull_shape: float = 1.2, followup_months: float = 120.0,
                           loss_rate: float = 0.0, mets_share: float = 0.5,
                           mets_time_ratio: float = 0.6, age_mean: float = 54.0,
                           age_sd: float = 10.0) -> SyntheticPersons:
    """Women randomized to weekly support groups or to control, followed until death.

    Shaped like Spiegel et al. (Lancet 1989): ``n_treated`` = 50 women randomized to
    weekly supportive-expressive groups, ``n_control`` = 36 controls, mean survival
    36.6 vs 18.9 months. The sizes are exact; the means hold in expectation.

    The distribution
    ----------------
    Each woman has a baseline covariate ``visceral_mets`` (0/1, probability
    ``mets_share``), which shortens survival by the time ratio ``mets_time_ratio``, and an
    ``age`` (years, normal, rounded; not prognostic here). Her survival time in months is

    .. math::

        T_i = \\mu_{arm} \\, m(x_i) \\, W_i / \\Gamma(1 + 1/k), \\qquad
        m(x) = r^{x} / (1 - p + p r),

    with ``W_i`` a standard Weibull variable of shape ``k`` (``weibull_shape``), ``r`` the
    time ratio and ``p`` the share with visceral metastases. Given ``x``, ``T`` is Weibull
    with shape ``k`` and scale ``mu_arm m(x) / Gamma(1 + 1/k)``; since ``E[W] =
    Gamma(1 + 1/k)`` and ``E[m(x)] = 1``, **the expected survival of an arm is exactly
    mu_arm**: the published mean (36.6 or 18.9 months) maps onto ``mu_arm`` directly.
    A shape above 1 gives a hazard of death that rises with time, as in advanced cancer.
    Because both arms share the shape, hazards are proportional given ``x``, with the
    true hazard ratio (support group vs control) ``(mu_control / mu_treated)^k``
    (about 0.45 with the defaults).

    Censoring
    ---------
    Administrative end of follow-up at ``followup_months`` (120: the ten-year report)
    after randomization; optionally also loss to follow-up at an exponential time with
    rate ``loss_rate`` per month (0 by default). ``survival_months`` is the time to death
    or censoring, whichever came first; ``died`` is 1 when death was observed. With the
    defaults about 2% of the support-group arm is still alive at ten years.

    Because of censoring, the mean itself cannot be estimated from the data without a
    model; what the data do identify is the *restricted* mean up to the end of
    follow-up, ``int_0^tau S(t) dt``. ``truth`` gives both, per arm (the restricted one in
    closed form through the regularized incomplete gamma function), and the median.

    Parameters
    ----------
    seed : int
    n_treated, n_control : int
        Arm sizes (exact).
    mean_months_treated, mean_months_control : float
        Expected survival per arm, months.
    weibull_shape : float
    followup_months : float
        Administrative censoring time after randomization.
    loss_rate : float
        Monthly rate of loss to follow-up (exponential), 0 for none.
    mets_share, mets_time_ratio : float
        Share with visceral metastases and their survival time ratio.
    age_mean, age_sd : float

    Returns
    -------
    SyntheticPersons
        ``frame`` columns: ``patient_id``, ``arm`` (``support_group`` / ``control``),
        ``survival_months``, ``died``, ``age``, ``visceral_mets``. ``latent``:
        ``survival_time`` (before censoring), ``censor_time``.

    References
    ----------
    Spiegel D, Bloom JR, Kraemer HC, Gottheil E (1989). Effect of psychosocial treatment
    on survival of patients with metastatic breast cancer. Lancet 2(8668):888-891.
    """
    if int(n_treated) < 1 or int(n_control) < 1:
        raise ParamsError("data.scenario_options.n_treated and n_control must be at least 1.")
    _check_positive(mean_months_treated=mean_months_treated, mean_months_control=mean_months_control,
                    weibull_shape=weibull_shape, followup_months=followup_months,
                    mets_time_ratio=mets_time_ratio, age_sd=age_sd)
    if not 0 <= mets_share <= 1 or loss_rate < 0:
        raise ParamsError("data.scenario_options: mets_share must be in [0, 1] and loss_rate >= 0.")
    k = float(weibull_shape)
    n = int(n_treated) + int(n_control)
    rng = _streams(seed, ["mets", "age", "survival", "loss"])
    treated = np.r_[np.ones(int(n_treated), bool), np.zeros(int(n_control), bool)]
    mets = (rng["mets"].random(n) < mets_share).astype(np.int64)
    age = np.round(rng["age"].normal(age_mean, age_sd, n)).astype(np.int64)
    norm = 1 - mets_share + mets_share * mets_time_ratio
    m = np.where(mets == 1, mets_time_ratio, 1.0) / norm
    mu = np.where(treated, mean_months_treated, mean_months_control)
    gamma1 = float(special.gamma(1 + 1 / k))
    t_death = mu * m * rng["survival"].weibull(k, n) / gamma1
    t_loss = rng["loss"].exponential(1 / loss_rate, n) if loss_rate > 0 else np.full(n, np.inf)
    t_censor = np.minimum(float(followup_months), t_loss)
    died = (t_death <= t_censor).astype(np.int64)
    months = np.where(died == 1, t_death, t_censor)
    frame = pd.DataFrame({
        "patient_id": [f"SPG{i:05d}" for i in range(1, n + 1)],
        "arm": np.where(treated, "support_group", "control"),
        "survival_months": months,
        "died": died,
        "age": age,
        "visceral_mets": mets,
    })
    latent = pd.DataFrame({"survival_time": t_death, "censor_time": t_censor})

    def arm_truth(mean: float) -> dict:
        scales = [mean * r / norm / gamma1 for r in (1.0, mets_time_ratio)]
        weights = [1 - mets_share, mets_share]

        def surv(t):
            return sum(w * np.exp(-(t / s) ** k) for w, s in zip(weights, scales))
        tau = float(followup_months)
        rmst = sum(w * _weibull_restricted_mean(s, k, tau) for w, s in zip(weights, scales))
        median = optimize.brentq(lambda t: surv(t) - 0.5, 1e-9, 100 * mean)
        return {"mean_months": float(mean), "restricted_mean_months": float(rmst),
                "median_months": float(median), "survival_at_end": float(surv(tau))}

    truth = {
        "scenario": "support_group_survival", "seed": int(seed),
        "options": {"n_treated": int(n_treated), "n_control": int(n_control),
                    "mean_months_treated": mean_months_treated,
                    "mean_months_control": mean_months_control, "weibull_shape": k,
                    "followup_months": float(followup_months), "loss_rate": loss_rate,
                    "mets_share": mets_share, "mets_time_ratio": mets_time_ratio,
                    "age_mean": age_mean, "age_sd": age_sd},
        "arms": {"support_group": arm_truth(mean_months_treated),
                 "control": arm_truth(mean_months_control)},
        "hazard_ratio": float((mean_months_control / mean_months_treated) ** k),
        "restricted_mean_tau": float(followup_months),
        "survival_sd_factor": float(np.sqrt(special.gamma(1 + 2 / k) / gamma1 ** 2
                                            * (1 - mets_share + mets_share * mets_time_ratio ** 2)
                                            / norm ** 2 - 1)),
        "source": "Spiegel et al., Lancet 1989: n = 50 vs 36; mean survival 36.6 vs 18.9 months",
    }
    truth["restricted_mean_difference"] = (truth["arms"]["support_group"]["restricted_mean_months"]
                                           - truth["arms"]["control"]["restricted_mean_months"])
    return SyntheticPersons(frame, truth, latent)


def true_restricted_mean(truth: dict, arm: str, tau: float) -> float:
    """Population restricted mean survival to ``tau`` of an arm (``support_group`` or
    ``control``) of a :func:`support_group_survival` scenario, from its ``truth``."""
    o = truth["options"]
    k = o["weibull_shape"]
    mean = o["mean_months_treated"] if arm == "support_group" else o["mean_months_control"]
    p, r = o["mets_share"], o["mets_time_ratio"]
    norm = 1 - p + p * r
    gamma1 = float(special.gamma(1 + 1 / k))
    return float(sum(w * _weibull_restricted_mean(mean * ratio / norm / gamma1, k, float(tau))
                     for w, ratio in ((1 - p, 1.0), (p, r))))


# --------------------------------------------------------------------------------------
# self-help group types (Yoak & Chesler 1985)
# --------------------------------------------------------------------------------------
_GROUP_TYPES = ("professional", "independent", "shared")


def group_types(seed: int = 19850601, groups: dict | None = None,
                mean_members: dict | None = None, members_dispersion: float = 4.0,
                min_members: int = 3, mean_activity_kinds: dict | None = None,
                activity_kinds_max: int = 8, mean_lifetime_months: dict | None = None,
                lifetime_shape: float = 1.3, min_age_months: float = 6.0,
                max_age_months: float = 120.0) -> SyntheticPersons:
    """Self-help groups of three leadership types, one row per group, at a survey date.

    Shaped like Yoak & Chesler (1985): 50 groups of parents of children with cancer, of
    three leadership types: ``professional`` (run by professional staff),
    ``independent`` (independent of staff) and ``shared`` (shared leadership). The paper
    reports that shared-leadership groups were larger, lasted longer and ran more kinds
    of activities; it gives no per-type figures that are used here, so **the split of
    the 50 groups over the types and every per-type mean below are scenario choices**
    that put the published ordering (shared highest on all three) into the expected
    values. Change them with ``data.scenario_options``.

    The distributions
    -----------------
    * ``members`` (the group's size, people): ``min_members + NegBin``, the negative
      binomial with mean ``mean_members[type] - min_members`` and size (dispersion)
      ``members_dispersion``; expected size = ``mean_members[type]``.
    * ``activity_kinds`` (how many of ``activity_kinds_max`` kinds of activity the group
      runs: meetings, newsletter, hospital visiting, social events, ...): every group
      meets, so ``1 + Binomial(activity_kinds_max - 1, q)`` with ``q`` set so that the
      expected count is ``mean_activity_kinds[type]``.
    * Group lifetime: Weibull with shape ``lifetime_shape`` and mean
      ``mean_lifetime_months[type]``. At the survey each group has existed for a time
      uniform on [``min_age_months``, ``max_age_months``]; a group still meeting then is
      **censored** at its age (``ended`` = 0), a group that stopped has ``ended`` = 1.
      ``lifetime_months`` is the lifetime or the age at the survey, whichever is
      shorter.

    Returns
    -------
    SyntheticPersons
        ``frame`` columns: ``group_id``, ``leadership``, ``members``, ``activity_kinds``,
        ``lifetime_months``, ``ended``. ``latent``: ``lifetime`` (before censoring),
        ``age_at_survey``. ``truth["types"][type]`` holds the expected members, activity
        kinds and lifetime, the median lifetime and the expected share ended.

    References
    ----------
    Yoak M, Chesler M (1985). Alternative professional roles in health care delivery:
    leadership patterns in self-help groups. Journal of Applied Behavioral Science
    21(4):427-444.
    """
    groups = dict(groups or {"professional": 17, "independent": 17, "shared": 16})
    mean_members = dict(mean_members or {"professional": 12.0, "independent": 10.0, "shared": 18.0})
    mean_activity_kinds = dict(mean_activity_kinds or
                               {"professional": 3.1, "independent": 3.4, "shared": 4.8})
    mean_lifetime_months = dict(mean_lifetime_months or
                                {"professional": 36.0, "independent": 30.0, "shared": 60.0})
    types = list(groups)
    for name, d in (("mean_members", mean_members), ("mean_activity_kinds", mean_activity_kinds),
                    ("mean_lifetime_months", mean_lifetime_months)):
        if set(d) != set(types):
            raise ParamsError(f"data.scenario_options.{name} must give a value for each type in "
                              f"`groups` ({', '.join(types)}); got {', '.join(map(str, d))}.")
    if any(int(v) < 1 for v in groups.values()):
        raise ParamsError("data.scenario_options.groups: every type needs at least one group.")
    _check_positive(members_dispersion=members_dispersion, lifetime_shape=lifetime_shape,
                    min_age_months=min_age_months,
                    mean_lifetime_months=list(mean_lifetime_months.values()))
    if max_age_months <= min_age_months:
        raise ParamsError("data.scenario_options.max_age_months must exceed min_age_months.")
    for t in types:
        if not mean_members[t] > min_members:
            raise ParamsError(f"data.scenario_options.mean_members.{t} must exceed min_members "
                              f"({min_members}).")
        if not 1 < mean_activity_kinds[t] < activity_kinds_max:
            raise ParamsError(f"data.scenario_options.mean_activity_kinds.{t} must lie between 1 "
                              f"and activity_kinds_max ({activity_kinds_max}).")
    k = float(lifetime_shape)
    gamma1 = float(special.gamma(1 + 1 / k))
    label = np.concatenate([[t] * int(groups[t]) for t in types])
    n = label.size
    rng = _streams(seed, ["members", "activities", "lifetime", "age"])
    extra_mean = np.array([mean_members[t] - min_members for t in label], float)
    p_nb = members_dispersion / (members_dispersion + extra_mean)
    members = min_members + rng["members"].negative_binomial(members_dispersion, p_nb)
    q = np.array([(mean_activity_kinds[t] - 1) / (activity_kinds_max - 1) for t in label])
    activities = 1 + rng["activities"].binomial(activity_kinds_max - 1, q)
    life_mean = np.array([mean_lifetime_months[t] for t in label], float)
    lifetime = life_mean * rng["lifetime"].weibull(k, n) / gamma1
    age = rng["age"].uniform(min_age_months, max_age_months, n)
    ended = (lifetime <= age).astype(np.int64)
    frame = pd.DataFrame({
        "group_id": [f"GRP{i:05d}" for i in range(1, n + 1)],
        "leadership": label,
        "members": members.astype(np.int64),
        "activity_kinds": activities.astype(np.int64),
        "lifetime_months": np.where(ended == 1, lifetime, age),
        "ended": ended,
    })
    latent = pd.DataFrame({"lifetime": lifetime, "age_at_survey": age})

    def type_truth(t: str) -> dict:
        scale = mean_lifetime_months[t] / gamma1
        # P(still running at the survey) = average over the uniform age of S(age)
        width = max_age_months - min_age_months
        running = (_weibull_restricted_mean(scale, k, max_age_months)
                   - _weibull_restricted_mean(scale, k, min_age_months)) / width
        return {"groups": int(groups[t]), "mean_members": float(mean_members[t]),
                "mean_activity_kinds": float(mean_activity_kinds[t]),
                "mean_lifetime_months": float(mean_lifetime_months[t]),
                "median_lifetime_months": float(scale * np.log(2) ** (1 / k)),
                "expected_share_ended": float(1 - running)}

    types_truth = {t: type_truth(t) for t in types}
    ref = types[0]
    truth = {
        "scenario": "group_types", "seed": int(seed),
        "options": {"groups": groups, "mean_members": mean_members,
                    "members_dispersion": members_dispersion, "min_members": min_members,
                    "mean_activity_kinds": mean_activity_kinds,
                    "activity_kinds_max": activity_kinds_max,
                    "mean_lifetime_months": mean_lifetime_months, "lifetime_shape": k,
                    "min_age_months": min_age_months, "max_age_months": max_age_months},
        "types": types_truth,
        # same Weibull shape in every type: hazards of ending are proportional, with
        # HR(a vs b) = (mean_b / mean_a)^k
        "hazard_ratio_vs_" + ref: {t: float((mean_lifetime_months[ref] / mean_lifetime_months[t]) ** k)
                                   for t in types},
        "source": "Yoak & Chesler 1985: 50 groups, three leadership types; shared leadership "
                  "larger, longer-lasting, more kinds of activities (ordering only)",
    }
    return SyntheticPersons(frame, truth, latent)


# --------------------------------------------------------------------------------------
# registry and writing
# --------------------------------------------------------------------------------------
#: Person-level scenarios by name: the generator of each.
PERSON_SCENARIOS: dict[str, Callable[..., SyntheticPersons]] = {
    "support_group_survival": support_group_survival,
    "group_types": group_types,
}


def generate(scenario: str, seed: int, **options: Any) -> SyntheticPersons:
    """Run the named scenario's generator with ``seed`` and scenario ``options``.

    Unknown scenario names and unknown options are :class:`~evalkit.errors.ParamsError`
    that list what is allowed.
    """
    if scenario not in PERSON_SCENARIOS:
        raise ParamsError(f"data.scenario: unknown person-level scenario {scenario!r}; "
                          f"available: {', '.join(PERSON_SCENARIOS)}")
    fn = PERSON_SCENARIOS[scenario]
    allowed = [p for p in inspect.signature(fn).parameters if p != "seed"]
    bad = sorted(set(options) - set(allowed))
    if bad:
        raise ParamsError(f"data.scenario_options: unknown option(s) {bad} for scenario "
                          f"{scenario!r}; allowed: {', '.join(allowed)}")
    return fn(seed=seed, **options)


@dataclass(frozen=True)
class WrittenPersons:
    path: Path
    truth: dict


def write(out_dir: str | os.PathLike, scenario: str, seed: int, **options: Any) -> WrittenPersons:
    """Generate a scenario and write ``<scenario>.parquet`` and ``truth.json`` into ``out_dir``.

    The Parquet file is written under a temporary name and renamed when complete.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = generate(scenario, seed, **options)
    path = out / f"{scenario}.parquet"
    tmp = out / f"{scenario}.parquet.partial"
    data.frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    (out / "truth.json").write_text(json.dumps(data.truth, indent=1, sort_keys=True))
    return WrittenPersons(path, data.truth)
