"""What runs inside a runner's Jupyter kernel: record its just-started state, and go back
to it before each workbook (:mod:`evalkit.kernels` says why and what the state is).

This module imports only what the workbooks import anyway (matplotlib, IPython,
threadpoolctl): the runner's side of the kernels (nbclient, nbformat, papermill) is never
loaded into a kernel.
"""
from __future__ import annotations

import ctypes
import gc
import sys
import warnings

import matplotlib
import matplotlib.pyplot as plt
from IPython import get_ipython
from threadpoolctl import threadpool_limits

#: The fresh kernel's state, recorded by :func:`remember` (in the kernel).
_FRESH: dict = {}


def remember() -> None:
    """In the kernel, after the warm-up imports: record the state :func:`fresh` restores.

    matplotlib's backend is loaded first: a new kernel loads it with the first figure
    of its first workbook (the inline backend then turns matplotlib's interactive mode
    on, which makes figures show); a reused kernel has it loaded already, so the state
    it returns to must be the one after loading. BLAS is limited to one thread for the
    kernel's life (see the module docstring)."""
    threadpool_limits(limits=1, user_api="blas")
    plt.switch_backend(matplotlib.get_backend())
    _FRESH.update(filters=list(warnings.filters), showwarning=warnings.showwarning,
                  rc=matplotlib.rcParams.copy())
    gc.collect()
    gc.freeze()     # the imported modules live as long as the kernel: never scan them again


def fresh() -> None:
    """In the kernel, before a workbook: back to the state :func:`remember` recorded (see
    the module docstring); then free what the previous workbook held."""
    if not _FRESH:
        raise RuntimeError("evalkit.kernel_state.fresh() before remember()")
    plt.close("all")
    get_ipython().reset(new_session=True)
    warnings.filters[:] = _FRESH["filters"]
    warnings.showwarning = _FRESH["showwarning"]
    warnings._filters_mutated()         # every module's __warningregistry__ is stale now
    warnings.onceregistry.clear()
    for module in list(sys.modules.values()):
        registry = getattr(module, "__warningregistry__", None)
        if isinstance(registry, dict):
            registry.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # deprecated settings are copied back silently
        matplotlib.rcParams.clear()
        matplotlib.rcParams.update(_FRESH["rc"])
    gc.collect()
    _release_free_memory()


def _release_free_memory() -> None:
    """Give the memory the previous workbook freed back to the system (glibc's
    ``malloc_trim``; nothing elsewhere). The kernels keep up to 128 MB of freed heap and
    serve arrays up to 32 MB from it (:data:`evalkit.kernel_server.MALLOC_ENV`), so a workbook
    that freed gigabytes in small arrays left the kernel that size for the next one, whose
    own peak then came on top (at 1M members the costs workbook peaks at 2.4 GB in a
    process of its own, and at 5.6 GB in a kernel that had executed three workbooks
    before it)."""
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):     # no glibc (macOS, Windows)
        return
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
