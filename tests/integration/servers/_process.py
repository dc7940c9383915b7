"""Process, port and log handling shared by the private mail servers (Postfix, Haraka).

Each server runs as our child in a session of its own, with its output appended to a
log file; it listens on loopback ports chosen at start-up and counts as ready once
every listener has sent its 220 greeting. Stopping waits until every process of its
session is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

HOST = "127.0.0.1"


def spawn(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start a daemon with stdin from /dev/null and its output appended to a file."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


def wait_or_terminate(process: subprocess.Popen[bytes], timeout: float) -> list[str]:
    """Wait for our child to exit; escalate to TERM then KILL (by its pid) if it hangs."""
    problems: list[str] = []
    for escalation in (None, signal.SIGTERM, signal.SIGKILL):
        if escalation is not None:
            problems.append(f"pid {process.pid} needed {escalation.name}")
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(escalation)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue
        return problems
    problems.append(f"pid {process.pid} did not exit")
    return problems


def session_members(session_id: int) -> list[int]:
    """Live (non-zombie) processes whose session id is ``session_id``."""
    members: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat_file:
                raw = stat_file.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: split after the last ")".
        fields = raw[raw.rfind(b")") + 2 :].split()
        state, session = fields[0], int(fields[3])
        if session == session_id and state not in (b"Z", b"X"):
            members.append(int(entry.name))
    return members


def wait_for_session_exit(session_id: int, timeout: float) -> list[str]:
    """Wait until no live process is left in the session; KILL stragglers by pid."""
    deadline = time.monotonic() + timeout
    while True:
        members = session_members(session_id)
        if not members:
            return []
        if time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    for pid in members:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return [f"killed leftover pids {members} of session {session_id}"]


def free_loopback_ports(count: int) -> tuple[int, ...]:
    """``count`` distinct TCP ports free on loopback (free when chosen, not reserved)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((HOST, 0))
        return tuple(sock.getsockname()[1] for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()


def wait_for_greetings(
    name: str,
    process: subprocess.Popen[bytes],
    listeners: Sequence[tuple[int, ssl.SSLContext | None]],
    deadline: float,
    logs: Callable[[], str],
) -> None:
    """Return once every listener (port, TLS context for implicit TLS or None) has sent
    its 220 greeting, in order.

    Raises RuntimeError, with ``logs()`` appended, if the process exits first or the
    deadline passes.
    """
    pending = list(listeners)
    while pending:
        if process.poll() is not None:
            raise RuntimeError(
                f"{name} exited with code {process.returncode} during start-up\n{logs()}"
            )
        port, context = pending[0]
        if smtp_greets(port, context):
            pending.pop(0)
            continue
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{name} did not greet on {HOST}:{port} in time\n{logs()}")
        time.sleep(0.02)


def smtp_greets(port: int, context: ssl.SSLContext | None) -> bool:
    """Whether the listener accepts a connection and sends a 220 greeting."""
    try:
        with socket.create_connection((HOST, port), timeout=2.0) as raw:
            if context is None:
                reply = read_reply(raw)
                raw.sendall(b"QUIT\r\n")
                return reply.startswith(b"220")
            with context.wrap_socket(raw, server_hostname=HOST) as tls:
                reply = read_reply(tls)
                tls.sendall(b"QUIT\r\n")
                return reply.startswith(b"220")
    except (OSError, ssl.SSLError):
        return False


def read_reply(sock: socket.socket) -> bytes:
    """Read one (possibly multi-line) SMTP reply."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
        lines = data.split(b"\r\n")
        complete = lines[:-1]
        if complete and len(complete[-1]) >= 4 and complete[-1][3:4] == b" ":
            return data


def tail_text(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file (of its last 64 KiB); "" if unreadable."""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(0, size - 64 * 1024))
            text = log.read().decode(errors="replace")
    except OSError:
        return ""
    return last_lines(text, lines)


def last_lines(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])
