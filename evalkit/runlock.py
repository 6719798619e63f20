"""One run per output folder: an OS-level lock on the folder plus the identity of the run.

A run holds an exclusive ``flock`` on ``.evalkit.lock`` in its output folder for as long
as it runs, and writes its identity there (:class:`RunIdentity`: run id, process id,
the process's start time and the host). A second run into the same folder is refused
with :class:`RunFolderBusy`, which names the run that holds it.

The operating system releases the lock when the process ends, however it ends
(``kill -9`` included), so a crashed run never blocks the folder. A lock that is still
held although its recorded owner is gone (the process ended, or its process id now
belongs to another program, told apart by the process start time) is stale: the lock
file is replaced and the new run goes on.

Examples
--------
>>> with RunLock("runs/demo", new_run_id()) as lock:     # doctest: +SKIP
...     ...                                               # the run's work
"""
from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import os
import socket
import secrets
import string
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from .errors import EvalkitError

__all__ = ["LOCK_NAME", "RunFolderBusy", "RunIdentity", "RunLock", "new_run_id",
           "process_start_time"]

LOCK_NAME = ".evalkit.lock"
_LETTERS = string.ascii_lowercase
#: Two start times of one process, read at different moments, agree to well within this
#: (seconds); a process id reused by another program starts later than that.
_START_TOLERANCE = 1.0


class RunFolderBusy(EvalkitError):
    """The output folder is in use by another run (which the message names)."""


def new_run_id() -> str:
    """A new run id: the UTC start time and 8 random letters, e.g.
    ``20261202T081530Z-kqwmbtze`` (letters only, so that the random part can never read as
    a number, such as a member id, in a privacy scan)."""
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{''.join(secrets.choice(_LETTERS) for _ in range(8))}"


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` of this machine started (seconds since the epoch), or None
    when there is no such process."""
    try:
        return psutil.Process(int(pid)).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, ValueError):
        return None
    except psutil.AccessDenied:       # it exists; its start time is not ours to read
        return float("nan")


@dataclass(frozen=True)
class RunIdentity:
    """Who a run is: ``run_id``, ``pid``, ``process_started`` (the process's start time,
    seconds since the epoch) and ``host``."""

    run_id: str
    pid: int
    process_started: float | None
    host: str

    @classmethod
    def current(cls, run_id: str) -> "RunIdentity":
        pid = os.getpid()
        return cls(run_id, pid, process_start_time(pid), socket.gethostname())

    @classmethod
    def from_dict(cls, d) -> "RunIdentity | None":
        try:
            return cls(str(d["run_id"]), int(d["pid"]), d.get("process_started"), str(d["host"]))
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    def to_dict(self) -> dict:
        return asdict(self)

    def alive(self) -> bool | None:
        """Whether the run's process is still there: False when it ended or its process
        id now belongs to a process started at another time; None when it cannot be
        told (a run on another machine)."""
        if self.host != socket.gethostname():
            return None
        started = process_start_time(self.pid)
        if started is None:
            return False
        if self.process_started is None or started != started:    # unknown or unreadable
            return True
        return abs(started - float(self.process_started)) <= _START_TOLERANCE

    def describe(self) -> str:
        when = ("" if self.process_started is None else ", started " + _dt.datetime.fromtimestamp(
            float(self.process_started), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"))
        return f"run {self.run_id} (process {self.pid} on {self.host}{when})"


def _read_identity(path: Path) -> RunIdentity | None:
    try:
        return RunIdentity.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


class RunLock:
    """Exclusive lock of an output folder for one run (a context manager).

    Parameters
    ----------
    folder : the run's output folder (must exist).
    run_id : the id of the run taking the lock.

    Attributes
    ----------
    identity : this run's :class:`RunIdentity`, written into the lock file.
    replaced : the identity of a stale holder that was replaced, or None.
    """

    def __init__(self, folder: str | Path, run_id: str):
        self.path = Path(folder) / LOCK_NAME
        self.identity = RunIdentity.current(run_id)
        self.replaced: RunIdentity | None = None
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        """Take the lock, or raise :class:`RunFolderBusy` naming the run holding it."""
        for _ in range(5):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise EvalkitError(f"cannot lock the output folder {self.path.parent}: "
                                       f"{err.strerror}") from None
                holder = _read_identity(self.path)
                if holder is not None and holder.alive() is False:
                    # held by a leftover (an inherited descriptor) of a run that is gone:
                    # replace the file; its old holder keeps only an unlinked inode
                    self.replaced = holder
                    self.path.unlink(missing_ok=True)
                    continue
                who = holder.describe() if holder else "another evalkit run"
                raise RunFolderBusy(
                    f"output folder {self.path.parent} is in use by {who}; wait for it to "
                    "finish or choose another --out (two runs into one folder would mix "
                    "their outputs)") from None
            try:       # the file may have been replaced while we waited: lock the current one
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            previous = _read_identity(self.path)
            if previous is not None and previous.run_id != self.identity.run_id:
                self.replaced = self.replaced or previous
            data = json.dumps(self.identity.to_dict()).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
            self._fd = fd
            return self
        raise RunFolderBusy(f"output folder {self.path.parent}: its lock file kept changing "
                            "while this run tried to take it; another run is starting there")

    def release(self) -> None:
        """Drop the lock (the lock file is removed first, so nobody locks a dead file)."""
        if self._fd is None:
            return
        try:
            if _read_identity(self.path) == self.identity:
                self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holder(folder: str | Path) -> RunIdentity | None:
    """The identity recorded in a folder's lock file, if the lock is held now."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _read_identity(path)       # someone holds it
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
