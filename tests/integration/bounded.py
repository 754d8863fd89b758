"""bounded.py — waits that always end, for the integration tests.

Every wait in a test must end within a bound and, when it does not, fail
with a message that names what it waited for (not hang until the stage's
900 s timeout, which names nothing). These helpers wrap the waits the tests
do — a child's exit, a line of a child's output, bytes on a socket — and
raise WaitTimeout (an AssertionError, so a case reports it as a failure)
after killing what they waited for where that makes sense.

    from bounded import wait_proc, wait_pid, readline, recv_until, run
    line = readline(proc.stdout, 20, "knit-hello's 'listening on' line")
    rc = wait_proc(proc, 20, "knit-notes to exit after SIGTERM")
"""
import os
import select
import signal
import socket
import subprocess
import threading
import time

__all__ = ["WaitTimeout", "wait_proc", "wait_pid", "communicate", "readline", "recv_until",
           "run", "join"]


class WaitTimeout(AssertionError):
    """A bounded wait ran out of time; the message names what was waited for."""


def _reap(proc):
    try:
        proc.kill()
    except OSError:
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass  # unkillable (D state): nothing more a test can do


def wait_proc(proc, timeout, what):
    """proc.wait() bounded by TIMEOUT seconds; on timeout the process is
    killed and WaitTimeout names WHAT."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _reap(proc)
        raise WaitTimeout("timed out after %g s waiting for %s (pid %d killed)"
                          % (timeout, what, proc.pid)) from None


def communicate(proc, timeout, what, input=None):
    """proc.communicate() bounded by TIMEOUT; kills the process on timeout."""
    try:
        return proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _reap(proc)
        raise WaitTimeout("timed out after %g s waiting for %s (pid %d killed)"
                          % (timeout, what, proc.pid)) from None


def wait_pid(pid, timeout, what, kill=True):
    """os.waitpid(pid, 0) bounded by TIMEOUT; returns the status. On timeout
    the child is killed with SIGKILL (and reaped) when KILL is true."""
    end = time.monotonic() + timeout
    delay = 0.005
    while True:
        p, status = os.waitpid(pid, os.WNOHANG)
        if p:
            return status
        if time.monotonic() >= end:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    if kill:
        try:
            os.kill(pid, signal.SIGKILL)
            wait_pid(pid, 10, "pid %d after SIGKILL" % pid, kill=False)
        except (OSError, WaitTimeout):
            pass
    raise WaitTimeout("timed out after %g s waiting for %s (pid %d%s)"
                      % (timeout, what, pid, " killed" if kill else ""))


def readline(stream, timeout, what):
    """stream.readline() bounded by TIMEOUT (a child's stdout, text or bytes;
    "" / b"" at EOF as usual). A reader thread does the read, so Python's
    buffering stays consistent for later reads of the same stream; after a
    timeout the stream is unusable (kill its process)."""
    box = []
    t = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise WaitTimeout("timed out after %g s waiting for %s" % (timeout, what))
    return box[0]


def recv_until(sock, marker, timeout, what, limit=1 << 24):
    """Read from SOCK until MARKER (bytes) is in what was read; returns all of
    it. Raises WaitTimeout when TIMEOUT passes first, EOFError when the peer
    closes first (both name WHAT and show the tail of what came)."""
    end = time.monotonic() + timeout
    data = b""
    while marker not in data:
        left = end - time.monotonic()
        if left <= 0:
            raise WaitTimeout("timed out after %g s waiting for %s; got %r"
                              % (timeout, what, data[-300:]))
        r, _, _ = select.select([sock], [], [], left)
        if not r:
            continue
        try:
            chunk = sock.recv(65536)
        except (BlockingIOError, socket.timeout):
            continue
        if not chunk:
            raise EOFError("connection closed while waiting for %s; got %r" % (what, data[-300:]))
        data += chunk
        if len(data) > limit:
            raise AssertionError("over %d bytes while waiting for %s" % (limit, what))
    return data


def run(cmd, timeout, what, **kw):
    """subprocess.run(cmd, timeout=TIMEOUT, **kw), with WaitTimeout naming WHAT."""
    try:
        return subprocess.run(cmd, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        raise WaitTimeout("timed out after %g s waiting for %s (%s)"
                          % (timeout, what, cmd if isinstance(cmd, str) else " ".join(cmd))) \
            from None


def join(thread, timeout, what):
    """thread.join() bounded by TIMEOUT."""
    thread.join(timeout)
    if thread.is_alive():
        raise WaitTimeout("timed out after %g s waiting for %s" % (timeout, what))
