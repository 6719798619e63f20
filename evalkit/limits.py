"""Resource limits checked before a run does any work.

* :func:`check_disk`: a synthetic plan of ``data.members`` members must fit on the disk of
  the output folder (the estimate is in the message), so that an absurd size is refused
  at once instead of filling the disk; :func:`check_synth_disk` does the same for
  ``evalkit synth``, which writes the Parquet tables only.
* :func:`default_memory_limit`: DuckDB's memory limit when ``engine.memory_limit`` is
  unset, half of the machine's memory and at most 2 GiB (DuckDB's own default is 80%,
  too much on a shared server).
* :func:`release_fits`: before a model fit on many rows, free the arrays of earlier fits
  that only reference cycles still hold.
"""
from __future__ import annotations

import gc
import shutil
from pathlib import Path

import psutil

from .errors import ParamsError

__all__ = ["BYTES_PER_MEMBER", "DEFAULT_MEMORY_CAP_MIB", "DISK_MARGIN", "PARQUET_BYTES_PER_MEMBER", "check_disk",
           "check_synth_disk", "default_memory_limit", "estimate_synthetic_bytes"]

#: Disk taken by one synthetic member (demo scenario, default ``lines_scale``): its
#: Parquet tables plus its share of ``analysis.duckdb``. Measured at 20,000 members
#: (``params/demo.yaml``, member ids as text): 10.2 MB of Parquet, 15.5 MB of DuckDB and
#: 0.4 MB of design tables, about 1,300 bytes a member.
BYTES_PER_MEMBER = 1_400
#: The Parquet tables alone (what ``evalkit synth`` writes): 10.2 MB at 20,000 members.
PARQUET_BYTES_PER_MEMBER = 550
#: Free space asked for beyond the estimate (DuckDB spills to disk while preparing).
DISK_MARGIN = 2.0


def estimate_synthetic_bytes(members: int, lines_scale: float = 1.0,
                             per_member: int = BYTES_PER_MEMBER) -> int:
    """Disk a synthetic plan of ``members`` members takes in a run folder (bytes), or
    with ``per_member=PARQUET_BYTES_PER_MEMBER`` as the Parquet tables alone."""
    return int(members * per_member * max(float(lines_scale), 1.0))


def check_disk(params, out_dir: str | Path) -> int | None:
    """Refuse a synthetic plan too large for the free disk of ``out_dir``.

    Returns the estimate in bytes (None when the data are not generated).

    Raises
    ------
    ParamsError
        Naming ``data.members``, the estimate and the free space.
    """
    d = params.data
    if params.mode != "claims" or d.source != "synthetic" or d.members is None:
        return None
    return _check_free(d.members, d.scenario_options.get("lines_scale", 1.0), out_dir,
                       BYTES_PER_MEMBER, f"data.members={d.members:,}",
                       ", and twice that free while it is prepared")


def check_synth_disk(members: int, lines_scale, out_dir: str | Path) -> int:
    """:func:`check_disk` for ``evalkit synth``: the Parquet tables of ``members``
    members must fit (twice over) on the disk of ``out_dir``. Returns the estimate."""
    return _check_free(members, lines_scale, out_dir, PARQUET_BYTES_PER_MEMBER,
                       f"--members {members:,}", ", and twice that free")


def _check_free(members: int, scale, out_dir, per_member: int, what: str, spare: str) -> int:
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        scale = 1.0
    need = estimate_synthetic_bytes(members, scale, per_member)
    probe = Path(out_dir)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need * DISK_MARGIN > free:
        raise ParamsError(
            f"{what}: a synthetic plan that large needs about "
            f"{_size(need)} on disk (about {per_member:,} bytes a member"
            + (f" at lines_scale {scale:g}" if scale != 1.0 else "")
            + f"{spare}); {probe} has {_size(free)} free. "
            "Choose fewer members or another --out.")
    return need


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} PB"


#: The most DuckDB may use by default (``engine.memory_limit`` unset), in MiB. Beyond its
#: limit DuckDB spills to disk; the steps that need memory (the member x window
#: aggregation in batches of about 4M claim lines, the sort of a synthetic plan's
#: claims) fit in it, and a million-member run stays within a few GB in all instead of
#: the runner alone taking half the machine (12.7 GB of 24 GB).
DEFAULT_MEMORY_CAP_MIB = 2048


def default_memory_limit() -> str:
    """Half of this machine's memory, at most :data:`DEFAULT_MEMORY_CAP_MIB`, as a DuckDB
    size (``'2048MiB'``-style)."""
    return f"{min(psutil.virtual_memory().total // 2 // 2**20, DEFAULT_MEMORY_CAP_MIB)}MiB"


#: Rows from which a model fit first frees what earlier fits left in reference cycles.
LARGE_FIT_ROWS = 100_000


def release_fits(rows: int) -> None:
    """Before fitting a model on ``rows`` rows: run the garbage collector when they are
    at least :data:`LARGE_FIT_ROWS`.

    A statsmodels fit and its results refer to each other, so the arrays of a fit that is
    no longer used (design matrices, weights, fitted values: tens of MB each at a million
    members) are freed only by the cyclic garbage collector, which runs after so many new
    objects, whatever their size. A loop of fits (families, outcomes, negative controls)
    then holds several fits' worth at once: at a million members the cohort-balance
    workbook's negative controls peaked at 3.9 GB without this and 3.1 GB with it. Smaller
    fits skip it: a full collection takes about 0.1 s where the imports are not frozen
    (the runner's kernels freeze theirs, :func:`evalkit.kernel_state.remember`).
    """
    if rows >= LARGE_FIT_ROWS:
        gc.collect()
