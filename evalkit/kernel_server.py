"""The runner's kernel fork server: a process that imports what every workbook imports
(:data:`WARM_UP`) once, then starts each Jupyter kernel the runner asks for as a fork of
itself, which has everything imported already.

A kernel started as its own Python process spends 2-3 s of a core importing the
scientific stack before it can execute anything; a forked one is ready in a tenth of
that. On the demo that is one kernel's imports fewer, and the second kernel ready with the
first; a process that makes several runs (a notebook, the test suite) imports the stack
once instead of once per kernel. The runner's side is in :mod:`evalkit.kernels`
(:class:`~evalkit.kernels.ForkServer`, which says when a kernel is started the usual way
instead).

A forked kernel is the process ``python -m ipykernel_launcher`` would have been:

* its own session and process group (signals to the group reach the kernel and what it
  started, as jupyter_client's own launch arranges);
* the requested folder, environment and command-line arguments, with ``sys.path[0]`` the
  kernel's folder, as for ``python -m``; the server imported with that environment
  (:func:`kernel_environment`: matplotlib's inline backend among it, as ipykernel sets
  it before a kernel's first import);
* standard input from ``/dev/null``, standard output and error those of the runner
  (when it started the server);
* default handling of Ctrl-C and of ended child processes (the server ignores the one
  and waits for its kernels on the other);
* Python's and NumPy's global random generators seeded afresh from the operating system
  (Python reseeds its own at a fork).

It stops by itself when its parent, the server, goes (ipykernel's parent poller), and the
server stops when the runner does (end of its standard input).

Protocol, over a socket pair whose one end the server gets as file descriptor FD
(``python -P -m evalkit.kernel_server FD``): the server says ``ready`` when its imports are
done, with its environment then (JSON); the runner then writes one JSON line a kernel (``argv``, ``cwd``, ``env``), and the
server answers each with the kernel's process id, a line each. The server stops when the
runner's end closes.
"""
from __future__ import annotations

import contextlib
import gc
import importlib.util
import json
import os
import signal
import socket
import sys
import traceback

import numpy as np

#: What the kernel imports when it starts: everything a workbook's first cells import
#: (executed by the server once, and by every kernel, where it costs nothing if forked).
WARM_UP = "import evalkit, evalkit.analysis.study, evalkit.analysis.plots, evalkit.analysis.show"

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
    requests = channel.makefile("rb")
    try:
        channel.sendall(b"ready " + json.dumps(dict(os.environ)).encode() + b"\n")
        for line in requests:
            request = json.loads(line)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                requests.close()
                channel.close()
                _become_kernel(request, launcher, namespace["ipykernel"].kernelapp)
            channel.sendall(f"{pid}\n".encode())
    except OSError:     # the runner has gone
        pass
    os._exit(0)


def _reap(signum, frame) -> None:
    """Wait for the kernels that ended (their CPU time then counts in the server's
    children's, and the server's in the runner's once it has waited for the server)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _become_kernel(request: dict, launcher: str, kernelapp) -> None:
    """In the forked child: the kernel process (see the module docstring). Never returns:
    the process ends with the kernel, as a Python process does (SystemExit), whatever
    stopped it."""
    try:
        os.setsid()
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
