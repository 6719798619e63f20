"""The workbooks evalkit ships: name, notebook file, the data modes each can read.

A run executes the workbooks its params name in the order of this catalogue, whatever
order the params list them in. Earlier workbooks may leave files that later ones read
(the cohort-balance design weights, in the run's ``work`` folder): a workbook names them
in ``after``, and when the runner executes two workbooks at once it starts a workbook
only once those it names have finished. A workbook that reads another's output must say
so here.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

#: Folder of the workbook notebooks, inside the package so that a wheel carries them. In
#: the repository ``evalkit/workbooks`` is a link to the top-level ``workbooks/`` folder,
#: where people open them; a built wheel holds the files themselves.
WORKBOOK_DIR = Path(__file__).resolve().parent / "workbooks"


@dataclass(frozen=True)
class Workbook:
    name: str
    file: str
    modes: tuple[str, ...]
    default: bool = True        # run when the params do not list workbooks
    about: str = ""
    #: params file (in ``params/``, shipped as ``evalkit/example_params``) of the built-in
    #: example the workbook runs against when opened on its own
    example: str = "demo.yaml"
    #: workbooks whose output this one reads, when they are in the same run
    after: tuple[str, ...] = ()
    #: seconds it takes on the demo plan (20,000 members, two workbooks at once on two
    #: cores): what :func:`most_work_first` orders by; it changes no result
    effort: float = 1.0


CATALOG: tuple[Workbook, ...] = (
    Workbook("data_quality", "01_data_quality.ipynb", ("claims", "person"),
             about="what came in, what was quarantined and why, attrition, Table 1",
             effort=0.5),
    Workbook("cohort_balance", "02_cohort_balance.ipynb", ("claims", "person"),
             about="propensity design, balance, diagnostics, negative controls, adjusted effects",
             effort=2.3),
    Workbook("utilization", "03_utilization.ipynb", ("claims", "person"),
             about="use of care per 1,000 member-months: crude, adjusted, pre/post",
             after=("cohort_balance",), effort=3.8),
    Workbook("costs", "04_costs.ipynb", ("claims", "person"),
             about="two-part cost model, PMPM, bootstrap intervals",
             after=("cohort_balance",), effort=4.6),
    Workbook("cost_benefit", "05_cost_benefit.ipynb", ("claims", "person"),
             about="savings against program cost, ROI, break-even, uncertainty",
             effort=8.1),
    Workbook("time_to_event", "06_time_to_event.ipynb", ("claims",),
             about="days to the first ER visit: Kaplan-Meier, log-rank, Cox",
             effort=1.4),
    Workbook("time_series", "07_time_series.ipynb", ("claims",), default=False,
             about="monthly ER rates per arm: interrupted time series, controlled and not",
             example="healthwise_er.yaml"),
    Workbook("planning", "08_planning.ipynb", ("claims", "person", "summary"), default=False,
             about="study planning: members needed, power and the smallest detectable drop",
             example="er_power.yaml"),
    Workbook("synthesis", "09_synthesis.ipynb", ("summary",), about="published figures: effect sizes, pooling (random effects), projection to a target plan", example="clearinghouse_brief.yaml"),
    Workbook("proportions", "10_proportions.ipynb", ("summary",), about="survey proportions with intervals and group comparisons", example="parent_survey.yaml"),
    Workbook("survival", "11_survival.ipynb", ("person",), default=False, about="survival by arm: Kaplan-Meier, median and restricted mean survival, log-rank, Cox", example="support_group_survival.yaml"),
    Workbook("group_comparison", "12_group_comparison.ipynb", ("person",), default=False, about="k groups (e.g. leadership types): sizes and activity counts, group lifetime, ANOVA, Kruskal-Wallis, k-group log-rank", example="group_types.yaml"),
)

BY_NAME = {w.name: w for w in CATALOG}
WORKBOOKS = tuple(BY_NAME)


def default_workbooks(mode: str) -> list[str]:
    """Workbooks run for a mode when the params do not list any."""
    return [w.name for w in CATALOG if w.default and mode in w.modes]


def most_work_first(names: list[str]) -> list[str]:
    """``names`` in the order to start them when several workbooks execute at once: the
    most work first, counting with a workbook's own ``effort`` that of every workbook
    among ``names`` that waits for it (directly or through another), ties in catalogue
    order.

    A workbook that others wait for goes first: on the demo the cohort-balance design,
    which the utilization and costs workbooks wait for, then the cost-benefit workbook
    (the longest alone) on the next kernel, and the short data-quality and time-to-event
    workbooks fill the gaps. The order changes no result: each workbook starts in a
    kernel reset to its just-started state."""
    wanted = in_run_order(names)

    @functools.cache
    def waiting(name: str) -> frozenset[str]:
        direct = {w for w in wanted if name in BY_NAME[w].after}
        return frozenset(direct.union(*map(waiting, direct)))

    def work(name: str) -> float:
        return BY_NAME[name].effort + sum(BY_NAME[w].effort for w in waiting(name))

    return sorted(wanted, key=lambda n: -work(n))


def in_run_order(names: list[str]) -> list[str]:
    """The named workbooks in catalogue order, each once."""
    wanted = set(names)
    return [w.name for w in CATALOG if w.name in wanted]
