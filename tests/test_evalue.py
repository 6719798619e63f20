"""E-values, checked by hand against the published formulas.

VanderWeele TJ, Ding P (2017). Sensitivity analysis in observational research:
introducing the E-value. Ann Intern Med 167:268-274:
  E = RR + sqrt(RR (RR - 1)) for RR >= 1 (1/RR for RR < 1); CI: the limit nearest the
  null, 1 if the CI includes 1; common-outcome OR -> sqrt(OR); common-outcome HR ->
  (1 - 0.5^sqrt(HR)) / (1 - 0.5^sqrt(1/HR)); mean difference -> RR = exp(0.91 d),
  CI exp(0.91 d -/+ 1.78 s_d), d = MD / sd.
Each expected value below is worked out in the comment next to it.
"""
import math

import pytest

from evalkit.causal import evalue
from evalkit.errors import ParamsError


def test_paper_example_rr():
    # The paper's example: RR 3.9 (95% CI 1.8 to 8.7)
    # point: 3.9 + sqrt(3.9 * 2.9) = 3.9 + sqrt(11.31) = 3.9 + 3.3630 = 7.2630
    # lower limit: 1.8 + sqrt(1.8 * 0.8) = 1.8 + sqrt(1.44) = 1.8 + 1.2 = 3.0
    ev = evalue(3.9, 1.8, 8.7)
    assert ev.point == pytest.approx(7.26303, abs=1e-5)
    assert ev.ci == pytest.approx(3.0, abs=1e-12)
    assert ev.rr == 3.9 and ev.scale == "RR"


def test_protective_rr_uses_inverse_and_upper_limit():
    # RR 0.8 -> 1/0.8 = 1.25: 1.25 + sqrt(1.25 * 0.25) = 1.25 + 0.559017 = 1.809017
    # upper limit 0.91 -> 1/0.91: (1 + sqrt(0.09)) / 0.91 = 1.3 / 0.91 = 1.428571
    ev = evalue(0.8, 0.71, 0.91)
    assert ev.point == pytest.approx(1.809017, abs=1e-6)
    assert ev.ci == pytest.approx(1.3 / 0.91, abs=1e-12)


def test_ci_crossing_null_gives_one():
    assert evalue(1.5, 0.9, 2.5).ci == 1.0
    assert evalue(0.7, 0.4, 1.2).ci == 1.0
    assert evalue(1.0).point == 1.0           # 1 + sqrt(1 * 0) = 1
    assert evalue(2.0).ci is None             # no interval given


def test_odds_ratio_common_and_rare():
    # common outcome OR 4 -> RR ~ sqrt(4) = 2: E = 2 + sqrt(2 * 1) = 3.414214
    ev = evalue(4.0, scale="OR", rare=False)
    assert ev.rr == 2.0 and ev.point == pytest.approx(2 + math.sqrt(2), abs=1e-12)
    # rare outcome: OR used as RR: OR 2 -> E = 2 + sqrt(2) as well
    assert evalue(2.0, scale="OR", rare=True).point == pytest.approx(2 + math.sqrt(2), abs=1e-12)


def test_hazard_ratio_common_outcome():
    # HR 2: 0.5^sqrt(2) = 0.375214, 0.5^sqrt(0.5) = 0.612547
    # RR ~ (1 - 0.375214) / (1 - 0.612547) = 0.624786 / 0.387453 = 1.612547
    # E = 1.612547 + sqrt(1.612547 * 0.612547) = 1.612547 + 0.993862 = 2.606409
    ev = evalue(2.0, 1.2, 3.0, scale="HR", rare=False)
    assert ev.rr == pytest.approx(1.612547, abs=1e-6)
    assert ev.point == pytest.approx(2.606409, abs=1e-6)
    # lower limit 1.2: 0.5^sqrt(1.2) = 0.467992, 0.5^sqrt(1/1.2) = ..., same formula
    lo = (1 - 0.5 ** math.sqrt(1.2)) / (1 - 0.5 ** math.sqrt(1 / 1.2))
    assert ev.ci == pytest.approx(lo + math.sqrt(lo * (lo - 1)), abs=1e-12)
    # rare outcome HR is used as a RR
    assert evalue(2.0, scale="HR").rr == 2.0


def test_mean_difference():
    # MD 0.5, sd 1 -> d = 0.5; RR ~ exp(0.91 * 0.5) = exp(0.455) = 1.576173
    # E = 1.576173 + sqrt(1.576173 * 0.576173) = 1.576173 + 0.952969 = 2.529142
    # with se 0.1: lower RR = exp(0.455 - 1.78 * 0.1) = exp(0.277) = 1.319166
    # E = 1.319166 + sqrt(1.319166 * 0.319166) = 1.319166 + 0.648871 = 1.968037
    ev = evalue(0.5, scale="MD", sd=1.0, se=0.1)
    assert ev.rr == pytest.approx(1.576173, abs=1e-6)
    assert ev.point == pytest.approx(2.529142, abs=1e-6)
    assert ev.ci == pytest.approx(1.968037, abs=1e-6)
    # without se, the CI limits are converted like the estimate: exp(0.91 * 0.2 / 1)
    ev2 = evalue(0.5, 0.2, 0.8, scale="MD", sd=1.0)
    assert ev2.rr_ci_low == pytest.approx(math.exp(0.182), abs=1e-12)


def test_errors():
    with pytest.raises(ParamsError, match="scale"):
        evalue(2.0, scale="RD")
    with pytest.raises(ParamsError, match="> 0"):
        evalue(-1.0)
    with pytest.raises(ParamsError, match="sd"):
        evalue(0.5, scale="MD")
    with pytest.raises(ParamsError, match="inside its CI"):
        evalue(2.0, 2.5, 3.0)
    with pytest.raises(ParamsError, match="only used"):
        evalue(2.0, sd=1.0)


def test_value_object():
    ev = evalue(3.9, 1.8, 8.7)
    assert list(ev.to_frame().columns) == ["scale", "rr", "rr_ci_low", "rr_ci_high",
                                           "evalue_point", "evalue_ci"]
    assert "7.26" in ev.summary()
