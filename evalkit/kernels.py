"""Jupyter kernels that execute several workbooks of a run, one after another.

Starting a kernel and importing the scientific stack (pandas, statsmodels, scipy,
matplotlib, DuckDB and evalkit) costs about 4-5 s, as much as a small workbook's analysis.
The runner starts a :class:`WorkbookKernel` once (while the data are prepared), imports
evalkit in it, and executes its workbooks in it one at a time. Before each workbook the
kernel is put back in the state of a kernel that has just started and imported evalkit
(:func:`evalkit.kernel_state.fresh`), so that a workbook sees what it would see in a
kernel of its own:

* an empty namespace, execution counts from 1 (IPython's ``reset(new_session=True)``);
* the warning filters of the fresh kernel, every module's record of warnings already
  shown cleared (Python shows a warning once per place in the code; a workbook must see
  its own warnings, not miss the ones an earlier workbook saw) and the warning display
  hook of the fresh kernel (a workbook's :class:`~evalkit.analysis.show.RunNotes`
  replaces it);
* matplotlib's settings of the fresh kernel (a workbook's theme changes them) and no
  open figure.

BLAS runs one thread in these kernels (:func:`evalkit.kernel_state.remember`): two
workbooks execute at once on two cores, and a model's tall-skinny linear algebra is
faster on one thread anyway (see
:func:`evalkit.models.effects.one_blas_thread`); the bootstraps run their blocks in threads
or processes of their own.

The kernels keep freed memory for reuse (:data:`evalkit.kernel_server.MALLOC_ENV`): the
analyses allocate and free arrays of a few megabytes by the thousand (a bootstrap's per-row
terms), and glibc by default returns such memory to the system each time, so that every
new array page-faults afresh (at 20,000 members about a tenth of the zero-inflated
bootstrap's time).

On Linux a kernel is started as a fork of the process's kernel fork server
(:mod:`evalkit.kernel_server`), which imported the scientific stack once: ready in about
0.4 s instead of 3-5 s, so that the second kernel of a run is ready with the first, and a
process that makes several runs imports the stack once. A kernel the server cannot serve
(another Python, a kernel spec of its own, an environment the server did not import with
while kernels of the server still run, a module of evalkit edited since the server
started), and every kernel on other systems, is started the usual way, as its own process.

The runner talks to its kernels through Unix sockets in a private folder
(:class:`LocalSocketKernelManager`), not TCP ports: a TCP port is picked by the runner and
bound by the kernel a moment later, and another process on the machine (another run's
kernel, a Spark worker) may take it in between, which kills the kernel at start.

Random numbers are not reset: a new kernel's global generators are seeded from the
operating system, so no workbook may rely on them; evalkit draws from generators
seeded from the params. This module runs in the runner; what runs inside the kernel is
in :mod:`evalkit.kernel_state`, which imports no more than the workbooks do (this
module's nbclient, nbformat and papermill would cost each kernel 0.15 s, and about 2 s
where jsonschema's format checkers are installed, as in the development environment).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import weakref
from pathlib import Path

import psutil

# before the packages that load nbformat (see evalkit/_nbformat.py)
from ._nbformat import nbformat  # noqa: I001

from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning import LocalProvisioner
from nbclient import NotebookClient
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines

from .errors import EvalkitError
from .kernel_server import MALLOC_ENV, WARM_UP, fork_server

#: Seconds between two saves of an executing notebook (see :class:`ThrottledSaves`).
SAVE_EVERY = 1.0


#: The longest socket path a Unix socket takes everywhere (Linux 107 bytes, macOS 103).
_SOCKET_PATH_MAX = 100


#: The socket folders' names in the temporary folder.
_FOLDER_PREFIX = "evalkit-kernel-"

#: Seconds after which a socket folder that nothing listens in is taken as left behind.
_STALE_AFTER = 300


def _remove_stale_folders() -> None:
    """Remove this user's socket folders that a runner killed outright (SIGKILL, SIGTERM:
    no clean-up runs) left behind: older than :data:`_STALE_AFTER` seconds, with no socket
    a process still listens on (its kernel stopped by itself when it saw its parent
    gone, leaving its socket files)."""
    root = Path(tempfile.gettempdir())
    for folder in root.glob(_FOLDER_PREFIX + "*"):
        try:
            info = folder.lstat()
            if not folder.is_dir() or info.st_uid != os.getuid() or \
                    time.time() - info.st_mtime < _STALE_AFTER or \
                    any(_listening(s) for s in folder.iterdir()):
                continue
        except OSError:
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _listening(path: Path) -> bool:
    """Whether a process accepts connections on the Unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def _remove_sockets(manager: weakref.ref, folder: str) -> None:
    """Remove a :class:`LocalSocketKernelManager`'s socket folder; when the runner's
    process exits with the manager's kernel still running or starting, kill that kernel
    first (it would otherwise bind in a folder that is gone and print the error, or stop
    by itself a moment later, when it sees its parent gone, leaving its sockets)."""
    process = getattr(getattr(manager(), "provisioner", None), "process", None)
    if process is not None:         # a Popen: kill() signals only a process not yet reaped
        with contextlib.suppress(OSError):
            process.kill()
    shutil.rmtree(folder, ignore_errors=True)


class ForkedKernelProcess:
    """What jupyter_client's :class:`LocalProvisioner` uses of the :class:`subprocess.Popen`
    of a kernel it started, for a kernel the fork server started: a child of the server,
    not of the runner, which therefore sees it end but not its exit status
    (``returncode`` is then minus the signal the runner sent, else 1)."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None
        self._signal: int | None = None     # the last signal sent
        try:
            self._process: psutil.Process | None = psutil.Process(pid)
        except psutil.Error:                # ended already
            self._process = None

    def _running(self) -> bool:
        try:
            return self._process is not None and self._process.is_running() and \
                self._process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def poll(self) -> int | None:
        if self.returncode is None and not self._running():
            self.returncode = -self._signal if self._signal else 1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"kernel {self.pid}", timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)
            self._signal = signum

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class LocalSocketKernelManager(AsyncKernelManager):
    """nbclient's kernel manager, connected to its kernel through Unix sockets in a folder
    of its own (mode 0700, removed when the kernel stops) rather than through TCP ports.

    With TCP, jupyter_client picks free ports and the kernel binds them when it has
    started, a second or so later; a port taken in between by another process (only the
    runner's own kernels are kept apart) kills the kernel with "Address already in use".
    Socket files cannot be taken that way. A kernel still running (or starting) when the
    runner's process exits, as after a run that failed early, is stopped then and its
    folder removed (:func:`_remove_sockets`); the folders of a runner killed outright are
    removed by a later one (:func:`_remove_stale_folders`). TCP stays where Unix sockets
    are not available (Windows) or the temporary folder's path is too long for one (its
    length counted in bytes)."""

    #: Start the kernel as a fork of the kernel fork server where it serves the kernel
    #: (False: always as a process of its own).
    fork = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if os.name != "posix":
            return
        _remove_stale_folders()
        folder = tempfile.mkdtemp(prefix=_FOLDER_PREFIX)
        ip = os.path.join(folder, uuid.uuid4().hex[:8])
        if len(os.fsencode(ip)) + len("-5") > _SOCKET_PATH_MAX:
            os.rmdir(folder)
            return
        self.transport, self.ip = "ipc", ip
        self._socket_folder = weakref.finalize(self, _remove_sockets, weakref.ref(self), folder)

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw) -> None:
        """Start the kernel as a fork of the process's kernel fork server
        (:func:`~evalkit.kernel_server.fork_server`) where it is the plain Python kernel of
        this interpreter (``python -m ipykernel_launcher``) and the server serves its
        environment; otherwise jupyter_client's own launch. Either way the kernel keeps
        freed memory for reuse (:data:`~evalkit.kernel_server.MALLOC_ENV`, where its
        environment does not say otherwise), whether it executes several workbooks or one."""
        cwd = kw.get("cwd") or os.getcwd()
        env = kw["env"] = {**MALLOC_ENV, **(kw.get("env") or os.environ)}
        pid = None
        if self.fork and type(self.provisioner) is LocalProvisioner \
                and kernel_cmd[:3] == [sys.executable, "-m", "ipykernel_launcher"]:
            server = fork_server(env, cwd)
            pid = server.fork(kernel_cmd[3:], cwd, env) if server is not None else None
        if pid is None:
            await super()._async_launch_kernel(kernel_cmd, **kw)
            return
        # what LocalProvisioner.launch_kernel records of the process it starts
        provisioner = self.provisioner
        provisioner.process, provisioner.pid, provisioner.pgid = ForkedKernelProcess(pid), pid, pid
        provisioner.cwd = cwd
        self._reconcile_connection_info(provisioner.connection_info)

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        """jupyter_client's clean-up, then the sockets' folder (unless restarting)."""
        await super()._async_cleanup_resources(restart=restart)
        if not restart and getattr(self, "_socket_folder", None) is not None:
            self._socket_folder()

    # jupyter_client's async manager binds this name to its own coroutine function, not
    # to the method above; nbclient calls it directly for a kernel that died
    cleanup_resources = _async_cleanup_resources


class OwnProcessKernelManager(LocalSocketKernelManager):
    """A :class:`LocalSocketKernelManager` whose kernel is always a process of its own."""

    fork = False


class _SavingManager(NotebookExecutionManager):
    """papermill's execution manager, saving the executing notebook at its start, then at
    most every :data:`SAVE_EVERY` seconds, and always when it ends (however it ends)."""

    _last_save = -float("inf")
    _ending = False

    def save(self, **kwargs):
        if not self._ending and time.monotonic() - self._last_save < SAVE_EVERY:
            return
        super().save(**kwargs)
        self._last_save = time.monotonic()

    def notebook_complete(self, **kwargs):
        self._ending = True
        super().notebook_complete(**kwargs)


class ThrottledSaves:
    """An engine mixin: papermill's own bookkeeping, but the executing notebook is saved as
    :class:`_SavingManager` says rather than at the start and the end of every cell.

    papermill saves twice per cell, markdown cells included, and each save validates and
    serialises the whole notebook, figures and all: on the demo some 330 saves, about 2.5 s
    of the runner's time while its kernel waits for the next cell. A save at most every
    second keeps what the saves are for: a notebook on disk that shows how far the
    workbook got, and a complete one (failing cell marked) when it ends, fails or its
    kernel dies, which papermill's engine saves whatever happened."""

    @classmethod
    def execute_notebook(cls, nb, kernel_name, output_path=None, progress_bar=True,
                         log_output=False, autosave_cell_every=30, **kwargs):
        """papermill's :meth:`Engine.execute_notebook`, with :class:`_SavingManager`."""
        nb_man = _SavingManager(nb, output_path=output_path, progress_bar=progress_bar,
                                log_output=log_output, autosave_cell_every=autosave_cell_every)
        nb_man.notebook_start()
        try:
            cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
        finally:
            nb_man.cleanup_pbar()
            nb_man.notebook_complete()
        return nb_man.nb


class OwnKernelEngine(ThrottledSaves, NBClientEngine):
    """papermill's nbclient engine (a new kernel for the notebook), with
    :class:`ThrottledSaves` and a :class:`LocalSocketKernelManager`."""

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, fork_kernels: bool = True,
                                 **kwargs):
        """papermill's engine, its kernel started by a :class:`LocalSocketKernelManager`
        (forked from the kernel fork server unless ``fork_kernels`` is False)."""
        kwargs.setdefault("kernel_manager_class",
                          LocalSocketKernelManager if fork_kernels else OwnProcessKernelManager)
        return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)


class SharedKernelEngine(ThrottledSaves, NBClientEngine):
    """papermill's nbclient engine, executing in a :class:`WorkbookKernel` given as
    ``kernel=`` through its client (papermill's own engine would open a second client on
    the kernel, which then takes the replies meant for the first); with
    :class:`ThrottledSaves`."""

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None,
                                 stderr_file=None, start_timeout=60, execution_timeout=None,
                                 kernel: WorkbookKernel | None = None, **kwargs):
        """Execute ``nb_man``'s notebook in ``kernel`` (papermill's engine interface)."""
        client = PapermillNotebookClient(nb_man, km=kernel.manager, kernel_name=kernel_name,
                                         log_output=log_output, stdout_file=stdout_file,
                                         stderr_file=stderr_file, startup_timeout=start_timeout,
                                         timeout=execution_timeout)
        client.kc = kernel.client
        return client.execute()


#: Names of :class:`SharedKernelEngine` and :class:`OwnKernelEngine` for
#: ``papermill.execute_notebook(engine_name=...)``.
ENGINE = "evalkit-shared-kernel"
OWN_ENGINE = "evalkit-own-kernel"
papermill_engines.register(ENGINE, SharedKernelEngine)
papermill_engines.register(OWN_ENGINE, OwnKernelEngine)


class WorkbookKernel:
    """A Jupyter kernel started in ``cwd`` (the run's output folder) with evalkit imported,
    for executing workbooks one after another (:meth:`prepare_workbook` between them);
    forked from the kernel fork server where it serves the kernel, unless ``fork`` is
    False (:mod:`evalkit.kernel_server`).

    The kernel and its client belong to the thread that made them (their messages go
    through that thread's event loop): use them from that thread only.
    """

    def __init__(self, kernel_name: str, cwd: str | Path, extra_arguments: list[str],
                 fork: bool = True):
        self._client = NotebookClient(
            nbformat.v4.new_notebook(), kernel_name=kernel_name,
            extra_arguments=list(extra_arguments), startup_timeout=60,
            shutdown_kernel="immediate",
            kernel_manager_class=LocalSocketKernelManager if fork else OwnProcessKernelManager)
        self._client.km = self._client.create_kernel_manager()
        try:
            self._client.start_new_kernel(cwd=str(cwd))
            self._client.start_new_kernel_client()
            self._run(f"{WARM_UP}\nimport evalkit.kernel_state\nevalkit.kernel_state.remember()")
        except BaseException:
            self.shutdown()
            raise

    @property
    def pid(self) -> int | None:
        """The kernel's process id (None once it has stopped)."""
        km = self._client.km
        return getattr(getattr(km, "provisioner", None), "pid", None) if km is not None else None

    @property
    def alive(self) -> bool:
        """Whether the kernel's process is running (False once it died or stopped)."""
        try:
            return self.pid is not None and \
                psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    @property
    def manager(self):
        """The kernel manager (papermill's ``km``)."""
        return self._client.km

    @property
    def client(self):
        """The kernel client (papermill's ``kc``)."""
        return self._client.kc

    def _run(self, code: str) -> None:
        """Execute ``code`` in the kernel silently (no output, no execution count)."""
        msg_id = self._client.kc.execute(code, silent=True, store_history=False,
                                         allow_stdin=False)
        reply = self._client.wait_for_reply(msg_id)
        content = (reply or {}).get("content", {})
        if content.get("status") != "ok":
            raise EvalkitError(f"the Jupyter kernel could not be prepared for a workbook: "
                               f"{content.get('ename', 'no reply')}: {content.get('evalue', '')}")

    def prepare_workbook(self) -> None:
        """Put the kernel back in its just-started state
        (:func:`evalkit.kernel_state.fresh`)."""
        self._run("__import__('evalkit.kernel_state').kernel_state.fresh()")

    def shutdown(self) -> None:
        """Stop the kernel (at once) and its client; safe to call twice or on a dead kernel."""
        if self._client.km is not None:
            self._client._cleanup_kernel()      # nbclient's own stop: kill, close channels
