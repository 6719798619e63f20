"""What software made a run: package versions, the lock file, the git commit.

:func:`provenance` is recorded in the ``run`` block of ``results.json`` (see
docs/results.md), so that a reader can tell which code produced the numbers:

* ``packages``: the versions of Python, evalkit and the libraries its numbers rest on;
* ``lock``: when evalkit runs from a checkout of its repository, the SHA-256 of the
  checkout's ``requirements.lock`` (the pinned dependencies); otherwise the installed
  distribution's version and the SHA-256 of its ``RECORD`` (which lists a hash of every
  installed file);
* ``git``: from a checkout, the commit and whether tracked files differ from it
  (``dirty``); absent when git or the repository is not there.
"""
from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from ._version import __version__

#: Distributions whose versions a run records (with Python's and evalkit's own).
PACKAGES = ("numpy", "pandas", "statsmodels", "scipy", "duckdb", "papermill")
#: The lock file of the runtime dependencies, at the top of a checkout.
LOCK_FILE = "requirements.lock"
#: The top folder of a checkout, when evalkit is imported from one.
CHECKOUT = Path(__file__).resolve().parent.parent


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _is_checkout(root: Path) -> bool:
    return (root / LOCK_FILE).is_file() and (root / "pyproject.toml").is_file() and \
        (root / "evalkit" / "__init__.py").is_file()


def _git(root: Path) -> dict | None:
    """The commit of the checkout at ``root`` and whether tracked files were changed; None
    when git is missing or ``root`` is not a repository."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=20, check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(changed)}


def provenance(root: Path = CHECKOUT) -> dict:
    """The software behind a run: ``packages``, ``lock`` and (from a checkout) ``git``.

    Parameters
    ----------
    root : the folder above the ``evalkit`` package; a checkout when it holds
        ``requirements.lock`` and ``pyproject.toml``.

    Examples
    --------
    >>> provenance()["packages"]["python"]                  # doctest: +SKIP
    '3.11.9'
    """
    packages = {"python": platform.python_version(), "evalkit": __version__,
                **{n: _version(n) for n in PACKAGES}}
    if _is_checkout(root):
        out = {"packages": packages,
               "lock": {"source": "checkout", "file": LOCK_FILE,
                        "sha256": _sha256(root / LOCK_FILE)}}
        git = _git(root)
        return {**out, "git": git} if git else out
    lock = {"source": "distribution", "version": _version("evalkit"), "record_sha256": None}
    try:
        record = metadata.distribution("evalkit").read_text("RECORD")
    except metadata.PackageNotFoundError:
        record = None
    if record:
        lock["record_sha256"] = hashlib.sha256(record.encode()).hexdigest()
    return {"packages": packages, "lock": lock}
