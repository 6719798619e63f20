"""What every params section shares: strict models (an unknown key is an error), the
limits of a params file, and the checks several sections make."""
from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

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


def _contract_categories(mapping: dict, key: str) -> dict:
    """A mapping onto the contract's categories: every target must be one of them."""
    bad = {k: c for k, c in mapping.items() if c not in CATEGORIES}
    if bad:
        raise ValueError(f"{key} maps onto unknown categories {bad}; "
                         f"allowed: {', '.join(CATEGORIES)}")
    return mapping


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_beta(mean: float, sd: float, name: str = "uptake") -> None:
    """A share drawn from a beta distribution needs sd^2 < mean (1 - mean)."""
    if sd > 0 and (mean >= 1 or sd ** 2 >= mean * (1 - mean)):
        raise ValueError(f"{name}_sd {sd:g} is too large for {name} {mean:g} (a beta "
                         f"distribution needs sd^2 < {name} (1 - {name}); an {name} of 1 "
                         f"cannot vary: set {name}_sd to 0)")
