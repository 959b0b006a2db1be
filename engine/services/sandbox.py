"""Run a function in a throwaway child process under an address-space limit and a deadline.

The children are forked from a "zygote": one helper process per parent process, started with
``subprocess`` (safe in a threaded asyncio program, unlike a bare ``fork``), kept
single-threaded so that forking it is safe, and holding the job's module already imported.
A call then costs a fork and two socket round trips instead of a new interpreter and its
imports. multiprocessing's forkserver would do the same, except that it re-runs the parent's
``__main__`` script in every child.

A job is a picklable module-level callable taking the payload bytes. Its return value, or
the exception it raises, comes back to the caller; a child that dies or overruns instead
raises one of the ``Sandbox*`` errors below.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import os
import pickle
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import NoReturn, TypeVar

T = TypeVar("T")

_FRAME = struct.Struct("!cQ")  # a tag and a payload length
_JOB, _DATA, _RESULT, _ERROR, _EXIT = b"J", b"D", b"R", b"E", b"X"
_EXIT_NO_MEMORY = 3  # the child's exit code after a MemoryError
_EXIT_FAILED = 4  # the child's exit code when it could not even report its failure
_BOOT = f"import sys; from {__name__} import _serve; _serve(int(sys.argv[1]))"


class SandboxError(Exception):
    """The child gave no result."""


class SandboxTimeout(SandboxError):
    """The deadline passed; the child was killed."""


class SandboxMemory(SandboxError):
    """The child ran out of its address space, or was killed by a signal (the OOM killer)."""


class SandboxCrash(SandboxError):
    """The child or the zygote died for another reason."""


def run(job: Callable[[bytes], T], data: bytes, *, memory_bytes: int, timeout_s: float) -> T:
    """Return ``job(data)`` computed in a child limited to ``memory_bytes`` of address space.

    The limit covers the whole child (interpreter, imported modules, the payload), and
    ``timeout_s`` covers the whole call, payload transfer included.
    """
    deadline = time.monotonic() + timeout_s
    sock, pid = _zygote().fork(_module_of(job), memory_bytes)
    with sock:
        try:
            # A child that dies before reading everything is followed by its exit status.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                _send(sock, deadline, _JOB, pickle.dumps(job))
                _send(sock, deadline, _DATA, data)
            tag, payload = _receive(sock, deadline)
        except TimeoutError:
            _kill(pid)
            raise SandboxTimeout(f"no result within {timeout_s:g} s") from None
    if tag == _RESULT:
        result: T = pickle.loads(payload)
        return result
    if tag == _ERROR:
        raise pickle.loads(payload)
    raise _exit_error(struct.unpack("!i", payload)[0])


def _module_of(job: Callable[..., object]) -> str:
    """The module the zygote should import before forking (a partial's function's)."""
    target = getattr(job, "func", job)
    return str(target.__module__)


def _exit_error(status: int) -> SandboxError:
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        return SandboxMemory(f"the child was killed by {name} (most likely out of memory)")
    code = os.WEXITSTATUS(status)
    if code == _EXIT_NO_MEMORY:
        return SandboxMemory("the child ran out of memory")
    return SandboxCrash(f"the child exited with code {code} and no result")


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.kill(pid, signal.SIGKILL)


# -- framing ---------------------------------------------------------------------------


def _send(sock: socket.socket, deadline: float | None, tag: bytes, payload: bytes) -> None:
    sock.settimeout(None if deadline is None else _remaining(deadline))
    sock.sendall(_FRAME.pack(tag, len(payload)))
    sock.settimeout(None if deadline is None else _remaining(deadline))
    sock.sendall(payload)


def _receive(sock: socket.socket, deadline: float | None) -> tuple[bytes, bytes]:
    tag, size = _FRAME.unpack(_receive_exact(sock, _FRAME.size, deadline))
    return tag, _receive_exact(sock, size, deadline)


def _receive_exact(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    received = 0
    while received < size:
        sock.settimeout(None if deadline is None else _remaining(deadline))
        count = sock.recv_into(view[received:])
        if count == 0:
            raise SandboxCrash("the sandbox closed the connection without a result")
        received += count
    return bytes(buffer)


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    return remaining


# -- the parent's side of the zygote ----------------------------------------------------


class _Zygote:
    """The helper process that forks the children, and the control socket to it."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                env=_zygote_environment(),
                stdin=subprocess.DEVNULL,
            )
        self.control = ours
        self.lock = threading.Lock()

    def alive(self) -> bool:
        return self.process.poll() is None

    def fork(self, module: str, memory_bytes: int) -> tuple[socket.socket, int]:
        """A new child that has set its limit and waits for a job on the returned socket."""
        ours, theirs = socket.socketpair()
        request = pickle.dumps((module, memory_bytes))
        with theirs, self.lock:
            try:
                socket.send_fds(self.control, [request], [theirs.fileno()])
                reply = self.control.recv(8)
            except OSError as exc:
                ours.close()
                raise SandboxCrash(f"the sandbox zygote is gone: {exc}") from exc
        if len(reply) != 8:
            ours.close()
            raise SandboxCrash("the sandbox zygote is gone")
        return ours, struct.unpack("!q", reply)[0]

    def close(self) -> None:
        self.control.close()  # the zygote exits on end of file, killing its children
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_current: _Zygote | None = None
_current_lock = threading.Lock()


def _zygote() -> _Zygote:
    """This process's zygote, (re)started when missing or dead."""
    global _current
    with _current_lock:
        if _current is None or not _current.alive():
            if _current is not None:
                _current.close()
            _current = _Zygote()
        return _current


@atexit.register
def _close_zygote() -> None:
    if _current is not None:
        _current.close()


def _forget_inherited_zygote() -> None:
    """A forked process (a worker, say) starts a zygote of its own when it needs one.

    Its copy of the control socket is closed, so that the parent's zygote still sees the
    parent go, and the lock renewed, in case another thread held it during the fork.
    """
    global _current, _current_lock
    if _current is not None:
        _current.control.close()
    _current, _current_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_inherited_zygote)


def _zygote_environment() -> dict[str, str]:
    """The parent's environment, its import path, and one thread per math library.

    Numerical libraries start thread pools at import; a zygote with threads would fork
    children holding locks nobody will release.
    """
    environment = dict(os.environ)
    path = [entry or os.getcwd() for entry in sys.path]
    environment["PYTHONPATH"] = os.pathsep.join(path)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        environment[name] = "1"
    return environment


# -- inside the zygote ----------------------------------------------------------------


def _serve(control_fd: int) -> None:
    """The zygote's loop: fork a child per request, report each child's exit status."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the parent to handle
    control = socket.socket(fileno=control_fd)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    children: dict[int, socket.socket] = {}
    while True:
        ready, _, _ = select.select([control.fileno(), wake_read], [], [])
        if wake_read in ready:
            os.read(wake_read, 4096)
            _reap(children)
        if control.fileno() in ready and not _fork_requested(
            control, children, (wake_read, wake_write)
        ):
            break
    for pid in children:
        _kill(pid)


def _fork_requested(
    control: socket.socket, children: dict[int, socket.socket], wake: tuple[int, int]
) -> bool:
    """Serve one request; False when the parent has gone."""
    try:
        message, fds, _, _ = socket.recv_fds(control, 4096, 1)
    except OSError:
        return False
    if not message or not fds:
        return False
    job_socket = socket.socket(fileno=fds[0])
    module, memory_bytes = pickle.loads(message)
    # Imported once per zygote, so that the children start warm. A failure is the child's
    # to report: it imports the module again when it unpickles the job.
    with contextlib.suppress(Exception):
        importlib.import_module(module)
    gc.freeze()  # the children's collections then leave the zygote's pages shared
    pid = os.fork()
    if pid == 0:
        control.close()
        for fd in wake:
            os.close(fd)
        for other in children.values():
            other.close()
        _child(job_socket, memory_bytes)
    children[pid] = job_socket
    control.send(struct.pack("!q", pid))
    return True


def _reap(children: dict[int, socket.socket]) -> None:
    """Collect exited children and send each one's exit status after whatever it sent."""
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        job_socket = children.pop(pid, None)
        if job_socket is None:
            continue
        # The caller may have stopped listening, or have its answer already.
        with job_socket, contextlib.suppress(OSError):
            job_socket.send(_FRAME.pack(_EXIT, 4) + struct.pack("!i", status), socket.MSG_DONTWAIT)


# -- inside a child -------------------------------------------------------------------


def _child(job_socket: socket.socket, memory_bytes: int) -> NoReturn:
    """Run one job under the limit and send its outcome; never returns to the zygote loop."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    code = 0
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, hard))
        code = _run_job(job_socket)
    except MemoryError:
        code = _EXIT_NO_MEMORY
    except BaseException:
        code = _EXIT_FAILED
    finally:
        os._exit(code)


def _run_job(job_socket: socket.socket) -> int:
    _, job_bytes = _receive(job_socket, None)
    job = pickle.loads(job_bytes)
    _, data = _receive(job_socket, None)
    try:
        tag, payload = _RESULT, pickle.dumps(job(data), protocol=5)
    except MemoryError:
        raise
    except BaseException as exc:
        tag, payload = _ERROR, _picklable(exc)
    del data
    _send(job_socket, None, tag, payload)
    return 0


def _picklable(exc: BaseException) -> bytes:
    """The exception pickled, or a SandboxCrash naming it when it would not survive the trip."""
    try:
        payload = pickle.dumps(exc)
        pickle.loads(payload)
    except Exception:
        return pickle.dumps(SandboxCrash(f"{type(exc).__name__}: {exc}"))
    return payload
