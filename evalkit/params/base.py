"""What every params section shares: strict models (an unknown key is an error), the
limits of a params file, and the checks several sections make."""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo, model_validator

from ..data.contract import CATEGORIES


TableName = Literal["members", "enrollment", "encounters", "exposure"]

#: Units ``engine.memory_limit`` accepts (DuckDB's).
MEMORY_UNITS = ("B", "KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB")
_MEMORY_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(" + "|".join(MEMORY_UNITS) + r")\s*",
                          re.IGNORECASE)
#: Smallest ``report.min_cell`` of a public run (the CMS cell-size rule: 1 to 10 people
#: are never shown). Internal runs may set a lower value.
PUBLIC_MIN_CELL = 11
#: Largest params file read, in bytes: a real params file is a few kilobytes.
MAX_PARAMS_BYTES = 1_000_000
#: Key of the run id the runner adds to ``params.json``; removed before validation.
RUN_ID_KEY = "run_id"


def _contract_categories(mapping: dict, info: ValidationInfo) -> dict:
    """A mapping onto the contract's categories: every target must be one of them."""
    bad = {k: c for k, c in mapping.items() if c not in CATEGORIES}
    if bad:
        raise ValueError(f"{info.field_name} maps onto unknown categories {bad}; "
                         f"allowed: {', '.join(CATEGORIES)}")
    return mapping


#: The check of a field that maps source codes onto the contract's categories, e.g.
#: ``category_map: Annotated[dict[str, str], ONTO_CATEGORIES]``.
ONTO_CATEGORIES = AfterValidator(_contract_categories)


def each(test: Callable[[float], bool], what: str) -> AfterValidator:
    """The check of a list field whose every value must pass ``test``; the error is
    ``what`` and the list given, e.g.
    ``wtp: Annotated[list[float], each(lambda x: x >= 0, "cannot be negative")]``."""
    def check(values):
        if values is not None and any(not test(x) for x in values):
            raise ValueError(f"{what}, got {values}")
        return values
    return AfterValidator(check)


#: The check of a list of shares (each between 0 and 1).
SHARES = each(lambda x: 0 <= x <= 1, "every value must be a share between 0 and 1")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_beta(mean: float, sd: float, name: str = "uptake") -> None:
    """A share drawn from a beta distribution needs sd^2 < mean (1 - mean)."""
    if sd > 0 and (mean >= 1 or sd ** 2 >= mean * (1 - mean)):
        raise ValueError(f"{name}_sd {sd:g} is too large for {name} {mean:g} (a beta "
                         f"distribution needs sd^2 < {name} (1 - {name}); an {name} of 1 "
                         f"cannot vary: set {name}_sd to 0)")


class _WithUptake(_Strict):
    """A section with ``uptake`` and ``uptake_sd`` (drawn from a beta distribution in the
    simulations): the two must make one (:func:`_check_beta`)."""

    @model_validator(mode="after")
    def _uptake(self):
        _check_beta(self.uptake, self.uptake_sd)
        return self
