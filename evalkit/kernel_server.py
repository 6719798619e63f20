"""The runner's kernel fork server: a process that imports what every workbook imports
(:data:`WARM_UP`) once, then starts each Jupyter kernel the runner asks for as a fork of
itself, which has everything imported already; and the runner's side of it
(:class:`ForkServer`, :func:`fork_server`).

A kernel started as its own Python process spends 2-3 s of a core importing the
scientific stack before it can execute anything; a forked one is ready in about 0.4 s. On
the demo that is one kernel's imports fewer, and the second kernel ready with the first;
a process that makes several runs (a notebook, the test suite) imports the stack once
instead of once per kernel. ``evalkit run`` starts the server first thing, so that its
imports overlap the runner's own. :class:`evalkit.kernels.LocalSocketKernelManager` asks
it for a kernel where it can serve one (:meth:`ForkServer.serves`), and starts the kernel
the usual way otherwise.

A forked kernel is the process ``python -m ipykernel_launcher`` would have been:

* its own session and process group (signals to the group reach the kernel and what it
  started, as jupyter_client's own launch arranges);
* the requested folder, environment and command-line arguments, with ``sys.path[0]`` the
  kernel's folder, as for ``python -m``; the server imported with that environment
  (:func:`kernel_environment`: matplotlib's inline backend among it, as ipykernel sets
  it before a kernel's first import);
* standard input from ``/dev/null``, standard output and error those of the runner when
  it asked for the kernel (passed over the socket);
* default handling of Ctrl-C and of ended child processes (the server ignores the one
  and waits for its kernels on the other);
* Python's and NumPy's global random generators seeded afresh from the operating system
  (Python reseeds its own at a fork).

It stops by itself when its parent, the server, goes (ipykernel's parent poller), and the
server stops when the runner does (its end of the socket closes). The server's own
output goes nowhere: it holds none of the runner's pipes, so nothing waits for it.

Protocol, over a Unix socket pair of messages (``SOCK_SEQPACKET``) whose one end the
server gets as file descriptor FD (``python -P -m evalkit.kernel_server FD``): the server
says ``ready`` when its imports are done, with its environment then (JSON); each request
is a JSON message (``argv``, ``cwd``, ``env``) carrying the runner's standard output and
error, each answer the kernel's process id.
"""
from __future__ import annotations

import atexit
import contextlib
import gc
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import psutil

#: What the kernel imports when it starts: everything a workbook's first cells import
#: (executed by the server once, and by every kernel, where it costs nothing if forked).
WARM_UP = "import evalkit, evalkit.analysis.study, evalkit.analysis.plots, evalkit.analysis.show"

#: glibc's malloc settings of the kernels (where the environment does not set them):
#: arrays up to 32 MB come from the heap (glibc's own ceiling for its adaptive threshold),
#: and up to 128 MB free at the heap's top is kept rather than given back. Other C
#: libraries ignore them.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(128 * 2**20)}

#: What the server imports beside :data:`WARM_UP`: the kernel's own machinery.
SERVER_IMPORTS = "import evalkit.kernel_state, ipykernel.kernelapp"

#: matplotlib's backend in a Jupyter kernel: ipykernel sets ``MPLBACKEND`` to it, unless
#: set, before the kernel imports anything (``IPKernelApp.init_gui_pylab``), and matplotlib
#: reads the variable when it is imported, which for a forked kernel is in the server.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def kernel_environment(env: dict[str, str]) -> dict[str, str]:
    """``env`` as a kernel started with it has it when its imports begin: with
    ``MPLBACKEND`` set to :data:`INLINE_BACKEND` unless set already."""
    return env if env.get("MPLBACKEND") else {**env, "MPLBACKEND": INLINE_BACKEND}


#: Whether kernels are forked here: on Linux. Windows has no fork, and macOS's system
#: libraries are not safe to use in a forked child of a process that loaded them.
AVAILABLE = sys.platform.startswith("linux")

#: Environment variables a forked kernel may have other values of than its fork server
#: had when it imported: set anew for each test by pytest, read at import by nothing.
_PER_PROCESS_ENV = frozenset({"PYTEST_CURRENT_TEST"})

#: Seconds the runner waits for the fork server's imports and then for each fork, before
#: it starts its kernels the usual way.
_FORK_TIMEOUT = 120

#: The largest message either side sends (an environment, as JSON).
_MESSAGE_MAX = 1 << 20

_PACKAGE = Path(__file__).resolve().parent


class ForkServer:
    """The runner's side: a server process started with ``env`` in folder ``cwd``, that
    forks kernels on request (:meth:`fork`). A process has at most one running
    (:func:`fork_server`); it stops when the process that started it does (its socket
    closes) or at :meth:`stop`."""

    def __init__(self, env: dict[str, str], cwd: str | Path):
        self.env = kernel_environment(dict(env))
        self.started = time.time()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.settimeout(_FORK_TIMEOUT)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-P", "-m", "evalkit.kernel_server", str(theirs.fileno())],
                cwd=cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
                start_new_session=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._socket = ours
        self._lock = threading.Lock()
        self._imports_set: set[str] | None = None   # None: not ready yet; see _ready()
        self._failed = False

    def _ready(self) -> bool:
        """Wait for the server's imports (call with the lock held); False if it failed.
        Its ``ready`` message carries its environment after the imports, which may have set
        variables of their own (threadpoolctl sets ``KMP_DUPLICATE_LIB_OK``): a kernel's
        environment may have those or not, as the runner's own imports set them or not."""
        if self._imports_set is None and not self._failed:
            try:
                word, _, after = self._socket.recv(_MESSAGE_MAX).partition(b" ")
                after = json.loads(after) if word == b"ready" else None
            except (OSError, ValueError):
                after = None
            if not isinstance(after, dict):
                self._failed = True
                return False
            self._imports_set = {k for k in after.keys() | self.env.keys()
                                 if after.get(k) != self.env.get(k)}
        return not self._failed

    def serves(self, env: dict[str, str]) -> bool:
        """Whether a kernel with environment ``env`` may be forked from this server (waits
        for the server's imports): the server runs, it imported with that environment (the
        variables of :data:`_PER_PROCESS_ENV`, and those its imports set, aside), and no
        module of evalkit changed on disk since it started (an edited source is loaded by
        a kernel started the usual way)."""
        with self._lock:
            if self.process.poll() is not None or not self._ready():
                return False
            aside = _PER_PROCESS_ENV | self._imports_set

            def rest(e: dict) -> dict:
                return {k: v for k, v in e.items() if k not in aside}
            return rest(kernel_environment(env)) == rest(self.env) and \
                not _changed_since(self.started)

    def fork(self, argv: list[str], cwd: str | Path, env: dict[str, str]) -> int | None:
        """Fork a kernel with command-line arguments ``argv`` (those after ``python -m
        ipykernel_launcher``) in folder ``cwd`` with environment ``env``; its process id,
        or None if the server failed or took too long (it is then not used again)."""
        request = json.dumps({"argv": list(argv), "cwd": str(cwd),
                              "env": kernel_environment(dict(env))}).encode()
        with self._lock:
            if not self._ready():
                return None
            try:
                # this process's standard output and error, as a launched kernel inherits
                socket.send_fds(self._socket, [request], [1, 2])
                reply = self._socket.recv(64)
                if reply.isdigit():
                    return int(reply)
            except OSError:
                pass
            self._failed = True
            return None

    def ended(self) -> bool:
        """Whether the server's process has ended (:func:`fork_server` replaces it)."""
        return self.process.poll() is not None

    def has_kernels(self) -> bool:
        """Whether a kernel forked from the server still runs (it would stop with it)."""
        try:
            return any(c.status() != psutil.STATUS_ZOMBIE
                       for c in psutil.Process(self.process.pid).children())
        except psutil.Error:
            return False

    def stop(self) -> None:
        """Stop the server (its kernels stop when they see it gone); again: nothing."""
        self._socket.close()
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.process.kill()
            self.process.wait()


_server: ForkServer | None = None
_server_lock = threading.Lock()


def _new_server(env: dict[str, str], cwd: str | Path) -> ForkServer:
    """A :class:`ForkServer`, stopped when this process exits (at the latest)."""
    server = ForkServer(env, cwd)
    atexit.register(server.stop)
    return server


def fork_server(env: dict[str, str], cwd: str | Path) -> ForkServer | None:
    """The process's :class:`ForkServer`, started (in ``cwd``, with ``env``) if none runs,
    or None if it does not serve ``env`` (:meth:`ForkServer.serves`) and kernels forked
    from it still run (they would stop with it), or where kernels are not forked
    (:data:`AVAILABLE`): that kernel is then started the usual way. A server that ended,
    or serves not ``env`` and has no kernel running, is replaced by one started with
    ``env`` (the environment of a long-lived process changes: pyspark sets variables of its
    own when a Spark session starts)."""
    global _server
    if not AVAILABLE:
        return None
    with _server_lock:
        if _server is not None and not _server.ended():
            if _server.serves(env):
                return _server
            if _server.has_kernels():
                return None
        if _server is not None:
            _server.stop()
            _server = None
        try:
            _server = _new_server(env, cwd)
        except OSError:         # no socket pair or process to be had: the usual start
            return None
        return _server if _server.serves(env) else None


def start_fork_server(env: dict[str, str] | None = None) -> None:
    """Start the process's fork server now, if none runs, without waiting for it, with the
    environment of the runner's kernels (``env``; default :data:`MALLOC_ENV` and this
    process's): ``evalkit run`` calls it first thing, so that the server's imports overlap
    its own."""
    global _server
    if not AVAILABLE:
        return
    with _server_lock:
        if _server is None or _server.ended():
            with contextlib.suppress(OSError):      # fork_server tries again, or gives up
                _server = _new_server({**MALLOC_ENV, **os.environ} if env is None else env,
                                      os.getcwd())


def server_pid() -> int | None:
    """The process id of the process's fork server while it runs, else None (the runner's
    memory sampler leaves it out of a workbook's processes: it holds no workbook's data)."""
    server = _server
    return server.process.pid if server is not None and not server.ended() else None


def stop_fork_server() -> None:
    """Stop the process's fork server, if one runs (it holds the imported libraries in
    memory, about 0.25 GB, for the next run's kernels)."""
    global _server
    with _server_lock:
        if _server is not None:
            _server.stop()
            _server = None


def _changed_since(t: float) -> bool:
    """Whether a module of evalkit was written after time ``t``."""
    return any(p.stat().st_mtime > t for p in _PACKAGE.rglob("*.py"))


def serve(fd: int) -> None:
    """The server's loop (see the module docstring), talking over the socket ``fd``; the
    process ends when the runner has gone (``os._exit``: nothing to write or close, and
    the frozen objects of the imported libraries are not torn down one by one)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # Ctrl-C in a terminal is the runner's
    signal.signal(signal.SIGCHLD, _reap)
    namespace: dict = {}
    exec(f"{WARM_UP}\n{SERVER_IMPORTS}", namespace)
    launcher = importlib.util.find_spec("ipykernel_launcher").origin   # sys.argv[0] of -m
    gc.collect()
    gc.freeze()     # the forks share the imported modules' pages: never scan them again
    channel = socket.socket(fileno=fd)
    try:
        channel.send(b"ready " + json.dumps(dict(os.environ)).encode())
        while True:
            message, fds, _, _ = socket.recv_fds(channel, _MESSAGE_MAX, 2)
            if not message:
                break
            pid = os.fork()
            if pid == 0:
                channel.close()
                _become_kernel(json.loads(message), fds, launcher,
                               namespace["ipykernel"].kernelapp)
            for f in fds:
                os.close(f)
            channel.send(str(pid).encode())
    except OSError:     # the runner has gone
        pass
    os._exit(0)


def _reap(signum, frame) -> None:
    """Wait for the kernels that ended (their CPU time then counts in the server's
    children's, and the server's in the runner's once it has waited for the server)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _become_kernel(request: dict, fds: list[int], launcher: str, kernelapp) -> None:
    """In the forked child: the kernel process (see the module docstring). Never returns:
    the process ends with the kernel, as a Python process does (SystemExit), whatever
    stopped it."""
    try:
        os.setsid()
        for target, f in zip((1, 2), fds):     # the runner's standard output and error
            os.dup2(f, target)
            os.close(f)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        # it stops when the server does: ipykernel read JPY_PARENT_PID when the server
        # imported it, so the parent is given on the command line as well
        server = str(os.getppid())
        os.environ["JPY_PARENT_PID"] = server
        argv = [*request["argv"], f"--IPKernelApp.parent_handle={server}"]
        sys.path.insert(0, os.getcwd())     # as for python -m (the server ran with -P)
        np.random.seed()
        sys.argv = [launcher, *argv]
        kernelapp.launch_new_instance(argv=argv)
    except SystemExit:
        raise
    except BaseException:   # noqa: BLE001 - shown as a kernel's own error would be
        traceback.print_exc()
        raise SystemExit(1) from None
    raise SystemExit(0)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
