"""Negative-control outcomes and empirical calibration of p-values and confidence intervals.

An observational design (matching, weighting, regression on claims data) carries
systematic error from residual confounding, selection and measurement that the
standard error knows nothing about. *Negative-control outcomes* are outcomes the
program cannot plausibly change -- e.g. injury or dental visits for a mental-health
self-help referral -- so their true effect is null (log rate ratio 0). Running the
same design on many of them shows how far its estimates stray from the truth when
there is nothing to find: that spread is an estimate of the design's systematic error.

Empirical calibration (Schuemie et al. 2014, 2018; R package ``EmpiricalCalibration``)
models this error as a normal distribution and folds it into inference:

1. :func:`negative_controls` runs the estimation on every negative-control outcome and
   collects ``log_estimate`` and ``std_error`` (:mod:`.controls`);
2. :func:`fit_null` fits the *empirical null* N(mu, sigma^2) by maximum likelihood
   (:mod:`.fit`);
3. :func:`calibrate_p` gives the calibrated p-value of an estimate of interest,
   :func:`calibrate_ci` its calibrated CI (optionally with a
   :func:`fit_systematic_error_model` that also uses positive controls), and
   :func:`calibrate` both as one :class:`Calibrated` value (:mod:`.inference`; the
   values in :mod:`.values`);
4. :func:`calibration_plot` draws the funnel of negative-control estimates against
   their SEs with the calibrated p < 0.05 boundary (:mod:`.plot`).

The estimates are on the log scale for ratio measures (log rate/odds/hazard ratios).
Nothing here uses the log itself, so differences (e.g. visits per member) can be
calibrated on their own scale, as long as controls and estimate share it.

References
----------
Schuemie MJ, Ryan PB, DuMouchel W, Suchard MA, Madigan D (2014). Interpreting
observational studies: why empirical calibration is needed to correct p-values.
Stat Med 33:209-218.
Schuemie MJ, Hripcsak G, Ryan PB, Madigan D, Suchard MA (2018). Empirical confidence
interval calibration for population-level effect estimation studies in observational
healthcare data. PNAS 115:2571-2577.
Lipsitch M, Tchetgen Tchetgen E, Cohen T (2010). Negative controls: a tool for detecting
confounding and bias in observational studies. Epidemiology 21:383-388.
"""
from .controls import negative_controls
from .fit import fit_null, fit_systematic_error_model
from .inference import calibrate, calibrate_ci, calibrate_p
from .plot import calibration_plot
from .values import Calibrated, Null, SystematicErrorModel

__all__ = [
    "Calibrated", "Null", "SystematicErrorModel", "calibrate", "calibrate_ci", "calibrate_p",
    "calibration_plot", "fit_null", "fit_systematic_error_model", "negative_controls",
]
