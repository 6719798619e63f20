"""What a workbook's ``params_path`` may be, and the built-in example it runs without one.

``evalkit run`` injects the path of the run's validated ``params.json``. A workbook
opened on its own (in JupyterLab, by ``jupyter nbconvert --execute`` or by papermill)
accepts instead:

- nothing (``params_path = None``): the workbook's built-in example (its ``example`` in
  :data:`evalkit.catalog.CATALOG`, one of the params files shipped in the package as
  ``evalkit/example_params``), claims-mode synthetic plans cut to
  :data:`EXAMPLE_MEMBERS` members;
- a params YAML file (``papermill ... -p params_path params/demo.yaml``).

Either is validated and prepared (:func:`evalkit.prepare.prepare`) into a folder of the
cache (:func:`cache_dir`) that then holds ``params.json`` and ``work/``, as a run's
output folder does. Params whose data are generated from the params alone (synthetic
plans, published figures) give the same data for the same params, seed and evalkit
version, so that folder is prepared once and reused; params that read a plan's own
files or database are prepared again each time, so the data are never stale.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ._version import __version__
from .catalog import BY_NAME
from .errors import ParamsError
from .params import load
from .prepare import prepare_run_folder

#: Members of a built-in claims example (the synthetic scenarios default to 20,000).
EXAMPLE_MEMBERS = 2_000

#: Folder of the example params files inside the package.
EXAMPLE_DIR = Path(__file__).resolve().parent / "example_params"


def cache_dir() -> Path:
    """Where prepared examples are kept: ``$EVALKIT_CACHE``, else
    ``$XDG_CACHE_HOME/evalkit``, else ``~/.cache/evalkit``."""
    if os.environ.get("EVALKIT_CACHE"):
        return Path(os.environ["EVALKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "evalkit"


def example_params(workbook: str = "data_quality"):
    """The validated params of ``workbook``'s built-in example.

    >>> example_params("survival").mode        # doctest: +SKIP
    'person'
    """
    if workbook not in BY_NAME:
        raise ParamsError(f"unknown workbook {workbook!r}; choose one of {', '.join(BY_NAME)}")
    path = EXAMPLE_DIR / BY_NAME[workbook].example
    params = load(path)
    if params.mode == "claims" and params.data.source == "synthetic":
        params = load(path, {"data.members": EXAMPLE_MEMBERS})
    return params


def run_params(params_path: str | Path | None = None, workbook: str = "data_quality") -> Path:
    """The ``params.json`` of a prepared run folder for a workbook's ``params_path``.

    Parameters
    ----------
    params_path : a run's ``params.json`` (returned as it is), a params YAML file, or
        None for the workbook's built-in example (see the module docstring).
    workbook : the workbook asking (its example is used when ``params_path`` is None).

    Returns
    -------
    Path
        ``params.json`` of a folder whose ``work/`` holds the prepared database.

    Raises
    ------
    ParamsError, DataValidationError
        As for ``evalkit run``: the params or the data are not usable.
    """
    if params_path is not None and Path(params_path).suffix == ".json":
        return Path(params_path)
    if params_path is None:
        params, stem = example_params(workbook), "example-" + Path(BY_NAME[workbook].example).stem
    else:
        params, stem = load(params_path), Path(params_path).stem
    folder = cache_dir() / f"{stem}-{params.digest()[:12]}-{__version__}"
    reusable = params.mode == "summary" or (
        params.data.source == "synthetic" and not (params.mode == "person" and params.data.person.path))
    if reusable and (folder / "params.json").is_file():
        return folder / "params.json"
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{stem}-", dir=folder.parent))
    try:
        prepare_run_folder(params, partial)
        if folder.exists():          # an earlier preparation (or one done meanwhile)
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder / "params.json"
