"""The kernel fork server (evalkit.kernel_server) and the kernels it forks: kernels
forked from it are the processes ``python -m ipykernel_launcher`` would have started, and
a kernel it cannot serve is started the usual way."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest
from jupyter_core.utils import run_sync

from evalkit import kernel_server, kernels, runner

ARGS = ["--IPKernelApp.log_level=CRITICAL"]

#: What a kernel reports of itself (written to inspect.json in its folder).
INSPECT = textwrap.dedent("""\
    import json, os, random, signal, sys
    import numpy as np
    with open("inspect.json", "w") as f:
        json.dump({
            "pid": os.getpid(), "sid": os.getsid(0), "cwd": os.getcwd(), "path0": sys.path[0],
            "test": os.environ.get("PYTEST_CURRENT_TEST"), "var": os.environ.get("EVALKIT_PROBE"),
            "malloc": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
            "parent": os.environ.get("JPY_PARENT_PID"), "ppid": os.getppid(),
            "np": np.random.random(), "py": random.random(),
            "sigint": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
            "sigchld": signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL,
            "stdin": os.path.realpath("/proc/self/fd/0")}, f)
""")


def _in_kernel(cwd, work, fork: bool = True) -> dict:
    """Start a WorkbookKernel in ``cwd`` in a thread of its own (its messages go through the
    thread that made it), call ``work(kernel)``, stop it; what ``work`` returned, with how
    the kernel was started."""
    seen = {}

    def run():
        kernel = kernels.WorkbookKernel("python3", cwd, ARGS, fork=fork)
        try:
            seen["forked"] = isinstance(kernel.manager.provisioner.process,
                                        kernels.ForkedKernelProcess)
            seen["result"] = work(kernel)
        finally:
            kernel.shutdown()
    t = threading.Thread(target=run)
    t.start()
    t.join()
    return seen


def _inspect(kernel) -> dict:
    """Run :data:`INSPECT` in ``kernel``; what it wrote."""
    kernel._run(INSPECT)
    folder = psutil.Process(kernel.pid).cwd()
    return json.loads((Path(folder) / "inspect.json").read_text())


def test_forked_kernels_are_the_processes_a_launch_would_start(tmp_path):
    """Two kernels from one server: each in its own session and folder (first on its
    path, as for python -m), stdin from /dev/null, the environment of its request (the
    test's name, which pytest changes after the server started), seeded afresh, default
    Ctrl-C and child handling; its parent, which it watches, the server."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    a = _in_kernel(first, _inspect)
    b = _in_kernel(second, _inspect)
    assert a["forked"] and b["forked"]
    a, b = a["result"], b["result"]
    server = kernel_server._server.process.pid
    for info, folder in ((a, first), (b, second)):
        assert info["sid"] == info["pid"]
        assert info["cwd"] == info["path0"] == str(folder.resolve())
        assert info["test"] == os.environ["PYTEST_CURRENT_TEST"]
        assert info["ppid"] == server and info["parent"] == str(server)
        assert info["sigint"] and info["sigchld"] and info["stdin"] == os.devnull
    assert a["pid"] != b["pid"]
    assert a["np"] != b["np"] and a["py"] != b["py"]
    own = _in_kernel(first, _inspect, fork=False)     # runner.run(fork_kernels=False)
    assert not own["forked"] and own["result"]["ppid"] == os.getpid()
    assert own["result"]["sid"] == own["result"]["pid"]
    # every kernel keeps freed memory for reuse, forked or not
    trim = kernel_server.MALLOC_ENV["MALLOC_TRIM_THRESHOLD_"]
    assert a["malloc"] == b["malloc"] == own["result"]["malloc"] == trim


def test_another_environment_gets_a_server_of_its_own_once_no_kernel_needs_the_last(
        tmp_path, monkeypatch):
    """A variable the server did not import with (pyspark sets some when a Spark session
    starts): while a kernel of that server runs, the new kernel is started the usual way
    (stopping the server would stop the running kernel); once none runs, a server with the
    new environment replaces it."""
    started, stop = threading.Event(), threading.Event()

    def hold(kernel):
        started.set()
        stop.wait(120)
    holder = threading.Thread(target=_in_kernel, args=(tmp_path, hold))
    holder.start()
    try:
        assert started.wait(120)
        first = kernel_server._server
        monkeypatch.setenv("EVALKIT_PROBE", "other")
        seen = _in_kernel(tmp_path, _inspect)
        assert not seen["forked"] and seen["result"]["var"] == "other"
        assert seen["result"]["ppid"] == os.getpid()
        assert kernel_server._server is first and first.has_kernels()
    finally:
        stop.set()
        holder.join()
    seen = _in_kernel(tmp_path, _inspect)
    assert seen["forked"] and seen["result"]["var"] == "other"
    assert kernel_server._server is not first and first.ended()


def test_a_module_edited_since_the_server_started_is_not_served(tmp_path, monkeypatch):
    """A source of evalkit written after the server imported it: the server no longer
    serves (the next kernel then gets a new server, or the usual start while kernels of this
    one run: the test above)."""
    env = {**kernel_server.MALLOC_ENV, **os.environ}
    server = kernel_server._server     # the one the tests before left, else a new one
    if server is None or server.ended():
        server = kernel_server.fork_server(env, tmp_path)
    env = server.env
    assert server.serves(env)
    package = tmp_path / "pkg"
    package.mkdir()
    edited = package / "module.py"
    edited.write_text("")
    monkeypatch.setattr(kernel_server, "_PACKAGE", package)
    os.utime(edited, (server.started - 1, server.started - 1))
    assert server.serves(env)
    os.utime(edited, (server.started + 0.01, server.started + 0.01))
    assert not server.serves(env)


def test_a_forked_kernel_is_interrupted_and_stopped(tmp_path):
    """Ctrl-C (the kernel manager's interrupt, a SIGINT to the kernel's group) stops a cell
    with KeyboardInterrupt and the kernel goes on; shutdown kills it."""
    def work(kernel):
        started = tmp_path / "sleeping"
        msg_id = kernel.client.execute(f"import time; open({str(started)!r}, 'w').close(); "
                                       "time.sleep(60)")
        while not started.exists():
            time.sleep(0.05)
        run_sync(kernel.manager.interrupt_kernel)()
        reply = kernel._client.wait_for_reply(msg_id)
        for _ in range(50):     # ipykernel aborts what arrives just after an error
            after = kernel._client.wait_for_reply(kernel.client.execute("x = 1"))
            if after["content"]["status"] != "aborted":
                break
            time.sleep(0.1)
        return reply["content"]["ename"], after["content"]["status"], kernel.pid
    seen = _in_kernel(tmp_path, work)
    assert seen["forked"]
    ename, after, pid = seen["result"]
    assert ename == "KeyboardInterrupt" and after == "ok"
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_server_and_kernels_stop_when_the_runner_is_killed(tmp_path):
    """A runner killed outright (SIGKILL: no clean-up) leaves no server or kernel behind."""
    code = textwrap.dedent(f"""\
        import sys, time
        from evalkit import kernel_server, kernels, runner
        k = kernels.WorkbookKernel("python3", {str(tmp_path)!r}, {ARGS!r})
        print(kernel_server._server.process.pid, k.pid, flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        server, kernel = map(int, proc.stdout.readline().split())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 30
    alive = [server, kernel]
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if psutil.pid_exists(p)
                 and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.2)
    assert alive == []


def test_the_memory_of_a_runners_children_is_its_kernels_not_the_server(tmp_path):
    """A workbook in a kernel of its own is measured as the runner's children
    (PeakMemory.processes(None)): the forked kernel counts, the idle server does not."""
    def work(kernel):
        listed = {p.pid for p in runner.PeakMemory.processes(None)}
        return kernel.pid in listed, kernel_server.server_pid() in listed
    seen = _in_kernel(tmp_path, work)
    assert seen["forked"] and seen["result"] == (True, False)
    assert kernel_server.server_pid() is not None


def test_forked_process_handle_reports_the_end_and_the_signal(tmp_path):
    """ForkedKernelProcess, jupyter_client's view of a kernel that is not its child: running
    until it ends; then minus the signal sent, or 1 where it ended by itself."""
    for signum, seconds in ((signal.SIGKILL, 60), (None, 0.2)):
        p = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])
        handle = kernels.ForkedKernelProcess(p.pid)
        assert handle.poll() is None
        if signum:
            handle.kill()
        p.wait()
        assert handle.wait(timeout=10) == (-signum if signum else 1)
        handle.kill()       # ended: nothing to signal, no error
    with pytest.raises(subprocess.TimeoutExpired):
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            kernels.ForkedKernelProcess(p.pid).wait(timeout=0.2)
        finally:
            p.kill()
            p.wait()
