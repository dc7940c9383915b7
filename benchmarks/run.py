"""The anyio_smtp benchmark: one command, every peer, one run.

    python benchmarks/run.py [--quick] [--rtt-ms 20] [--messages N] [--only a,b,c,d]

Scenarios (each client runs in a process of its own, started by this script):

(a) loopback: 1 KiB messages over one connection, 1 and 5 recipients, to a
    local sink;
(b) the same through a latency relay that adds ``--rtt-ms`` per round trip;
(c) one large message (50 MiB) streamed from a file: MiB/s and the growth of
    peak memory, against ``socket.sendall`` of the pre-encoded bytes;
(d) ``SMTPPool`` with 8 connections through the relay against one connection.

Extras, run only when asked for with ``--only``: (e) DATA against BDAT in
``send_many``; (f) the same clients as (a) against a real Haraka 3.3.4 on
loopback (``tests/integration/servers/haraka.py``; ``.ci/run`` installs it).

The sink is Postfix's ``smtp-sink`` when it is installed, else ``sink.py``.
Every process this script starts is stopped by its pid when it ends, also on
Ctrl-C, SIGTERM or an error.  See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import pwd
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata, util
from pathlib import Path
from types import FrameType
from typing import Any, Final, TextIO

from common import MIB, Result, cpu_count, cpu_model, dot_stuff, write_large_message

TIMES: Final = "\u00d7"  # the multiplication sign of ratios
DASH: Final = "\u2013"  # the en dash of ranges
HERE: Final = Path(__file__).resolve().parent
ROOT: Final = HERE.parent
CLIENTS: Final = HERE / "clients.py"
PEERS: Final = ("aiosmtplib", "smtpproto", "trio")
INSTALL_HINT: Final = "pip install -r benchmarks/requirements.txt"
#: Seconds one client process may take before it is stopped.
CLIENT_TIMEOUT: Final = 900.0

LABELS: Final = {
    "anyio_smtp-asyncio": "anyio_smtp/asyncio",
    "anyio_smtp-trio": "anyio_smtp/trio",
    "anyio_smtp-asyncio-send_mail": "anyio_smtp/asyncio, send_mail loop",
    "anyio_smtp-asyncio-bdat": "anyio_smtp/asyncio, BDAT",
    "anyio_smtp-trio-bdat": "anyio_smtp/trio, BDAT",
    "anyio_smtp-asyncio-data": "anyio_smtp/asyncio, DATA",
    "anyio_smtp-trio-data": "anyio_smtp/trio, DATA",
    "anyio_smtp-asyncio-bytes": "anyio_smtp/asyncio, read into memory",
    "aiosmtplib": "aiosmtplib",
    "smtplib": "smtplib",
    "smtpproto": "smtpproto",
    "raw": "raw socket floor",
    "anyio-floor-asyncio": "anyio floor/asyncio",
    "anyio-floor-trio": "anyio floor/trio",
    "pool-asyncio": "SMTPPool/asyncio, send_many",
    "pool-trio": "SMTPPool/trio, send_many",
    "pool-asyncio-send_mail": "SMTPPool/asyncio, send_mail x16 tasks",
}
HOW: Final = {
    "anyio_smtp-asyncio": "send_many",
    "anyio_smtp-trio": "send_many",
    "anyio_smtp-asyncio-send_mail": "send_mail per message",
    "anyio_smtp-asyncio-bdat": 'send_many(transfer="bdat")',
    "anyio_smtp-trio-bdat": 'send_many(transfer="bdat")',
    "anyio_smtp-asyncio-data": 'send_many(transfer="data")',
    "anyio_smtp-trio-data": 'send_many(transfer="data")',
    "aiosmtplib": "SMTP.sendmail per message",
    "smtplib": "SMTP.sendmail per message",
    "smtpproto": "session.send_message per message",
    "raw": "pre-encoded, pipelined",
    "anyio-floor-asyncio": "the same over an anyio stream",
    "anyio-floor-trio": "the same over an anyio stream",
}
BATCH_CLIENTS: Final = (
    "anyio_smtp-asyncio",
    "anyio_smtp-trio",
    "anyio_smtp-asyncio-send_mail",
    "aiosmtplib",
    "smtplib",
    "smtpproto",
    "raw",
)
#: (a) also measures the event loop's own floor: one round trip per message, no protocol.
LOOPBACK_CLIENTS: Final = (*BATCH_CLIENTS, "anyio-floor-asyncio", "anyio-floor-trio")
FLOORS: Final = frozenset({"raw", "anyio-floor-asyncio", "anyio-floor-trio"})
#: Clients that wait for every reply: over the relay they get fewer messages.
LOCK_STEP: Final = frozenset({"anyio_smtp-asyncio-send_mail", "aiosmtplib", "smtplib", "smtpproto"})
STREAM_CLIENTS: Final = (
    "anyio_smtp-asyncio",
    "anyio_smtp-trio",
    "anyio_smtp-asyncio-bytes",
    "aiosmtplib",
    "smtplib",
    "smtpproto",
    "raw",
)
STREAM_HOW: Final = {
    "anyio_smtp-asyncio": "binary file object, streamed",
    "anyio_smtp-trio": "binary file object, streamed",
    "anyio_smtp-asyncio-bytes": "file read into bytes",
    "aiosmtplib": "file read into bytes (no streaming API)",
    "smtplib": "file read into bytes (no streaming API)",
    "smtpproto": "file read into bytes (no streaming API)",
    "raw": "pre-encoded bytes in memory, sendall",
}
#: Ratio columns: each row is compared with each of these.
PEER_COLUMNS: Final = ("smtplib", "aiosmtplib", "smtpproto", "raw")
PEER_NAMES: Final = {
    "smtplib": "smtplib",
    "aiosmtplib": "aiosmtplib",
    "smtpproto": "smtpproto",
    "raw": "raw floor",
}


# -- output --------------------------------------------------------------------------


class Report:
    """Prints to the terminal and, with ``--output``, to a Markdown file."""

    def __init__(self, path: Path | None) -> None:
        self._file: TextIO | None = path.open("w") if path is not None else None

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        if self._file is not None:
            self._file.write(text + "\n")
            self._file.flush()

    def progress(self, text: str) -> None:
        """A line for the terminal only (stderr), not part of the report."""
        print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _ratio(value: float, base: float) -> str:
    if value <= 0 or base <= 0:
        return "—"
    ratio = value / base
    return f"{ratio:.2f}{TIMES}" if ratio < 10 else f"{ratio:.1f}{TIMES}"


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: int = 1) -> list[str]:
    """A Markdown table; columns from ``right`` on are right-aligned."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append(
        "|" + "|".join("---:" if index >= right else "---" for index in range(len(header))) + "|"
    )
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _report_table(
    report: Report,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    notes: Sequence[str],
    *,
    right: int = 2,
) -> None:
    """Report a table (columns from ``right`` on right-aligned), then its notes."""
    for line in _table(header, rows, right=right):
        report(line)
    report()
    for note in notes:
        report(note)
    if notes:
        report()


# -- processes -----------------------------------------------------------------------


class Processes:
    """The long-running helpers (sink, relays): started here, stopped by pid."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, argv: list[str], *, report_port: bool
    ) -> tuple[subprocess.Popen[bytes], int | None]:
        """Start ``argv`` in its own session (Ctrl-C reaches only this script).

        :param report_port: the program prints its port on its first line
        """
        log = (self._folder / f"{name}.log").open("wb")
        try:
            child = subprocess.Popen(  # noqa: S603 - our own argv, no shell
                argv,
                stdin=subprocess.PIPE if report_port else subprocess.DEVNULL,
                stdout=subprocess.PIPE if report_port else log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()
        self._children.append((name, child))
        if not report_port:
            return child, None
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 20)
        line = child.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            raise RuntimeError(f"{name} did not start: see {self._folder / (name + '.log')}")
        return child, int(line)

    def log(self, name: str) -> str:
        try:
            return (self._folder / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop_all(self) -> None:
        for _name, child in reversed(self._children):
            _stop(child)
        self._children.clear()


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.stdin is not None:
        with contextlib.suppress(OSError):
            child.stdin.close()  # our helpers end when their input closes
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            child.terminate()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            child.wait(timeout=5)
    if child.stdout is not None:
        child.stdout.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_greeting(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                if sock.recv(512).startswith(b"220"):
                    sock.sendall(b"QUIT\r\n")
                    sock.recv(512)
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no SMTP greeting on 127.0.0.1:{port}")
        time.sleep(0.05)


@dataclass
class Sink:
    name: str
    port: int
    description: str


def start_sink(processes: Processes, choice: str, *, chunking: bool) -> Sink:
    program = shutil.which("smtp-sink") or (
        "/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None
    )
    if choice in ("auto", "smtp-sink") and program is not None and not chunking:
        port = _free_port()
        argv = [program, "-4", "-c", "-h", "localhost"]
        if os.geteuid() == 0:
            user = "postfix" if _user_exists("postfix") else "nobody"
            argv += ["-u", user]  # smtp-sink refuses to run as root
        argv += [f"inet:127.0.0.1:{port}", "1024"]
        processes.start("smtp-sink", argv, report_port=False)
        _wait_for_greeting(port)
        return Sink(
            "smtp-sink",
            port,
            "Postfix smtp-sink (PIPELINING, 8BITMIME; no CHUNKING, SIZE or SMTPUTF8)",
        )
    if choice == "smtp-sink":
        raise SystemExit("smtp-sink is not installed (Debian: apt-get install postfix)")
    argv = [sys.executable, str(HERE / "sink.py")]
    if chunking:
        argv.append("--chunking")
    _child, reported = processes.start("sink", argv, report_port=True)
    assert reported is not None
    _wait_for_greeting(reported)
    extensions = "PIPELINING, 8BITMIME, SIZE, SMTPUTF8" + (", CHUNKING" if chunking else "")
    return Sink("sink.py", reported, f"benchmarks/sink.py, asyncio ({extensions})")


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def start_relay(processes: Processes, target: int, rtt_ms: float, name: str) -> int:
    argv = [
        sys.executable,
        str(HERE / "relay.py"),
        "--target",
        f"127.0.0.1:{target}",
        "--rtt-ms",
        str(rtt_ms),
    ]
    _child, port = processes.start(name, argv, report_port=True)
    assert port is not None
    return port


def ping(port: int, count: int = 50) -> list[float]:
    """Round trips (seconds) of NOOP and its reply: what one round trip costs."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = sock.makefile("rb")
        reader.readline()
        times: list[float] = []
        for _ in range(count):
            start = time.perf_counter()
            sock.sendall(b"NOOP\r\n")
            reader.readline()
            times.append(time.perf_counter() - start)
        sock.sendall(b"QUIT\r\n")
        reader.readline()
        reader.close()
    return times


# -- running clients -----------------------------------------------------------------


@dataclass
class Row:
    client: str
    label: str
    results: list[Result] = field(default_factory=list)

    @property
    def ok(self) -> list[Result]:
        return [result for result in self.results if result.error is None]

    @property
    def error(self) -> str | None:
        errors = [result.error for result in self.results if result.error is not None]
        return errors[0] if errors and not self.ok else None

    def best_rate(self) -> float:
        return max((result.rate for result in self.ok), default=0.0)

    def best_throughput(self) -> float:
        return max((result.mib_per_second for result in self.ok), default=0.0)

    def spread(self, *, stream: bool = False) -> str:
        values = [result.mib_per_second if stream else result.rate for result in self.ok]
        if len(values) < 2:
            return ""
        return f"{_number(min(values))}{DASH}{_number(max(values))}"

    def peak_growth(self) -> int | None:
        values = [result.peak_growth for result in self.ok if result.peak_growth is not None]
        return max(values) if values else None

    def failures(self) -> int:
        return sum(result.failures for result in self.ok)


class Runner:
    def __init__(self, report: Report, *, profile_dir: Path | None) -> None:
        self._report = report
        self._profile_dir = profile_dir
        self._count = 0
        self._env = dict(os.environ)
        # The working tree's anyio_smtp, whether or not it is installed.
        self._env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(ROOT), self._env.get("PYTHONPATH")])
        )

    def client(self, client: str, scenario: str, arguments: list[str]) -> Result:
        argv = [sys.executable, str(CLIENTS), client, scenario, *arguments]
        self._count += 1
        name = f"{self._count:03d}-{client}-{scenario}"
        if self._profile_dir is not None:
            argv += ["--profile", str(self._profile_dir / f"{name}.prof")]
        try:
            completed = subprocess.run(  # noqa: S603 - our own argv, no shell
                argv,
                capture_output=True,
                text=True,
                timeout=CLIENT_TIMEOUT,
                env=self._env,
                check=False,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            return Result(client, scenario, error=f"timed out after {CLIENT_TIMEOUT:g} s")
        if self._profile_dir is not None and completed.stderr:
            (self._profile_dir / f"{name}.txt").write_text(completed.stderr)
        for line in reversed(completed.stdout.splitlines()):
            if line.startswith("RESULT "):
                return Result.loads(line)
        tail = (completed.stderr or completed.stdout).strip().splitlines()[-1:]
        return Result(
            client,
            scenario,
            error=f"exit status {completed.returncode}: {tail[0] if tail else 'no output'}",
        )

    def measure(
        self,
        title: str,
        clients: Sequence[str],
        scenario: str,
        arguments: dict[str, list[str]],
        repeats: int,
    ) -> list[Row]:
        """Run every client ``repeats`` times, interleaved (a different order each time)."""
        rows = {client: Row(client, LABELS[client]) for client in clients}
        for repeat in range(repeats):
            shift = repeat % len(clients)
            order = list(clients[shift:]) + list(clients[:shift])
            for client in order:
                self._report.progress(f"  {title}: {LABELS[client]} (run {repeat + 1}/{repeats})")
                result = self.client(client, scenario, arguments[client])
                rows[client].results.append(result)
                if result.error is not None:
                    self._report.progress(f"    error: {result.error}")
        return [rows[client] for client in clients]


# -- the scenarios -------------------------------------------------------------------


@dataclass
class Settings:
    messages: int
    relay_messages: int
    pool_messages: int
    stream_size: int
    repeats: int
    rtt_ms: float
    haraka_messages: int = 200
    connections: int = 8


@dataclass
class Targets:
    lines: list[tuple[str, str, bool | None]] = field(default_factory=list)

    def add(self, name: str, figure: str, met: bool | None) -> None:
        self.lines.append((name, figure, met))


def _batch_table(report: Report, rows: Sequence[Row], *, note_messages: bool) -> None:
    by_client = {row.client: row for row in rows}
    header = ["client", "how", "msg/s", "runs (msg/s)"]
    if note_messages:
        header.append("messages")
    header += [f"vs {PEER_NAMES[peer]}" for peer in PEER_COLUMNS]
    table: list[list[str]] = []
    notes: list[str] = []
    for row in rows:
        rate = row.best_rate()
        cells = [row.label, HOW.get(row.client, "")]
        if row.error is not None:
            cells += ["—", ""] + ([""] if note_messages else []) + ["—"] * len(PEER_COLUMNS)
            notes.append(f"- {row.label}: {row.error}")
            table.append(cells)
            continue
        cells += [_number(rate), row.spread()]
        if note_messages:
            cells.append(str(row.ok[0].messages))
        for peer in PEER_COLUMNS:
            base = by_client[peer].best_rate() if peer in by_client else 0.0
            cells.append("—" if peer == row.client else _ratio(rate, base))
        if row.failures():
            notes.append(f"- {row.label}: {row.failures()} messages were refused")
        table.append(cells)
    for line in _table(header, table, right=2):
        report(line)
    if notes:
        report()
        for note in notes:
            report(note)


def scenario_a(
    report: Report, runner: Runner, sink: Sink, settings: Settings, targets: Targets
) -> dict[int, list[Row]]:
    results: dict[int, list[Row]] = {}
    for count in (1, 5):
        arguments = {
            client: [
                "--port",
                str(sink.port),
                "--messages",
                str(settings.messages),
                "--recipients",
                str(count),
                "--warmup",
                str(max(20, settings.messages // 20)),
            ]
            for client in LOOPBACK_CLIENTS
        }
        title = f"(a) loopback, {count} recipient{'s' if count > 1 else ''}"
        rows = runner.measure(title, LOOPBACK_CLIENTS, "batch", arguments, settings.repeats)
        results[count] = rows
        report(
            f"### (a) Loopback: 1 KiB messages, {count} recipient{'s' if count > 1 else ''}, "
            f"one connection, {settings.messages} messages, best of {settings.repeats}"
        )
        report()
        _batch_table(report, rows, note_messages=False)
        report()
        by_client = {row.client: row for row in rows}
        smtplib_rate = by_client["smtplib"].best_rate()
        for client in ("anyio_smtp-asyncio", "anyio_smtp-trio"):
            rate = by_client[client].best_rate()
            ratio = rate / smtplib_rate if smtplib_rate else 0.0
            targets.add(
                f"(a) {LABELS[client]} ≥ 2{TIMES} smtplib, {count} rcpt",
                f"{ratio:.2f}{TIMES} ({_number(rate)} vs {_number(smtplib_rate)} msg/s)",
                ratio >= 2.0 if rate and smtplib_rate else None,
            )
        # The floors are not clients: the sink must keep well ahead of the clients.
        fastest = max((row.best_rate() for row in rows if row.client not in FLOORS), default=0.0)
        floor = by_client["raw"].best_rate()
        if fastest and floor:
            verdict = (
                "the sink is not the bottleneck"
                if floor >= 2 * fastest
                else "WARNING: the sink may be limiting the clients"
            )
            report(
                f"Sink check: the raw floor reached {_number(floor)} msg/s, "
                f"{floor / fastest:.1f}{TIMES} the fastest client: {verdict}."
            )
            report()
    return results


def relay_check(report: Report, sink: Sink, relay_port: int, rtt_ms: float) -> float:
    direct = ping(sink.port)
    relayed = ping(relay_port)
    median = statistics.median(relayed)
    report(
        f"Relay check: NOOP ping-pong through the relay (asked for {rtt_ms:g} ms): median "
        f"{median * 1000:.2f} ms, 10th{DASH}90th percentile "
        f"{_quantile(relayed, 0.1) * 1000:.2f}{DASH}{_quantile(relayed, 0.9) * 1000:.2f} ms "
        f"over {len(relayed)} pings (direct to the sink: "
        f"{statistics.median(direct) * 1000:.3f} ms)."
        f" At one round trip per message that allows at most {1 / median:.1f} msg/s."
    )
    report()
    return median


def _quantile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)]


def scenario_b(
    report: Report,
    runner: Runner,
    relay_port: int,
    settings: Settings,
    targets: Targets,
    measured_rtt: float,
) -> None:
    goal = 0.9 * 1000 / settings.rtt_ms  # 45 msg/s at 20 ms: 90 % of one message per RTT
    for count in (1, 5):
        arguments = {}
        for client in BATCH_CLIENTS:
            messages = settings.relay_messages
            if client in LOCK_STEP:
                messages = max(10, messages // 4)
            arguments[client] = [
                "--port",
                str(relay_port),
                "--messages",
                str(messages),
                "--recipients",
                str(count),
                "--warmup",
                "3",
            ]
        title = f"(b) {settings.rtt_ms:g} ms RTT, {count} recipient{'s' if count > 1 else ''}"
        rows = runner.measure(title, BATCH_CLIENTS, "batch", arguments, settings.repeats)
        report(
            f"### (b) Through the latency relay ({settings.rtt_ms:g} ms RTT; measured "
            f"{measured_rtt * 1000:.2f} ms): 1 KiB messages, {count} "
            f"recipient{'s' if count > 1 else ''}, one connection, best of {settings.repeats}"
        )
        report()
        _batch_table(report, rows, note_messages=True)
        report()
        by_client = {row.client: row for row in rows}
        for client in ("anyio_smtp-asyncio", "anyio_smtp-trio"):
            rate = by_client[client].best_rate()
            targets.add(
                f"(b) {LABELS[client]} ≥ {goal:.0f} msg/s at {settings.rtt_ms:g} ms, {count} rcpt",
                f"{_number(rate)} msg/s (limit {1000 / settings.rtt_ms:.0f}; "
                f"{1 / measured_rtt:.1f} at the measured RTT)",
                rate >= goal if rate else None,
            )


def scenario_c(
    report: Report,
    runner: Runner,
    sinks: Sequence[Sink],
    settings: Settings,
    folder: Path,
    targets: Targets,
) -> None:
    """The large message, against each sink; the first one decides the targets."""
    message = folder / "large.eml"
    encoded = folder / "large.data"
    report.progress(f"  writing a {settings.stream_size / MIB:g} MiB message to {message}")
    write_large_message(message, settings.stream_size)
    encoded.write_bytes(dot_stuff(message.read_bytes()))
    for index, sink in enumerate(sinks):
        arguments = {
            client: [
                "--port",
                str(sink.port),
                "--file",
                str(message),
                "--encoded-file",
                str(encoded),
            ]
            for client in STREAM_CLIENTS
        }
        title = f"(c) stream to {sink.name}"
        rows = runner.measure(title, STREAM_CLIENTS, "stream", arguments, settings.repeats)
        _stream_table(report, rows, sink, settings)
        if index == 0:
            _stream_targets(rows, targets, sink)
    report(
        "Throughput: the message's size over the time from MAIL to the final reply (reading "
        "the file included, except for the raw floor whose bytes are encoded beforehand). "
        "Peak RSS growth: the client process's resident-set high-water mark during the send "
        "minus its resident set just before (Linux VmHWM, reset first through "
        "/proc/self/clear_refs; ru_maxrss elsewhere), the largest of the runs."
    )
    report()


def _stream_table(report: Report, rows: Sequence[Row], sink: Sink, settings: Settings) -> None:
    size = settings.stream_size / MIB
    report(
        f"### (c) One {size:g} MiB message from a file to {sink.name}: throughput and peak "
        f"memory, best of {settings.repeats}"
    )
    report()
    by_client = {row.client: row for row in rows}
    header = ["client", "how the message is held", "MiB/s", "runs (MiB/s)", "peak RSS growth"]
    header += [f"vs {PEER_NAMES[peer]}" for peer in PEER_COLUMNS]
    table: list[list[str]] = []
    notes: list[str] = []
    for row in rows:
        cells = [row.label, STREAM_HOW[row.client]]
        if row.error is not None:
            table.append([*cells, "—", "", "—"] + ["—"] * len(PEER_COLUMNS))
            notes.append(f"- {row.label}: {row.error}")
            continue
        throughput = row.best_throughput()
        growth = row.peak_growth()
        cells += [
            _number(throughput),
            row.spread(stream=True),
            f"{growth / MIB:.1f} MiB" if growth is not None else "—",
        ]
        for peer in PEER_COLUMNS:
            base = by_client[peer].best_throughput() if peer in by_client else 0.0
            cells.append("—" if peer == row.client else _ratio(throughput, base))
        if row.failures():
            notes.append(f"- {row.label}: the message was refused")
        table.append(cells)
    _report_table(report, header, table, notes)
    floor = by_client["raw"].best_throughput()
    fastest = max((row.best_throughput() for row in rows if row.client != "raw"), default=0.0)
    if floor and fastest:
        verdict = (
            "the sink is not the bottleneck"
            if floor >= 2 * fastest
            else "the sink limits the floor, so ratios against it flatter the clients"
        )
        report(
            f"Sink check: the raw floor reached {_number(floor)} MiB/s, "
            f"{floor / fastest:.1f}{TIMES} the fastest client: {verdict}."
        )
        report()


def _stream_targets(rows: Sequence[Row], targets: Targets, sink: Sink) -> None:
    by_client = {row.client: row for row in rows}
    floor = by_client["raw"].best_throughput()
    for client in ("anyio_smtp-asyncio", "anyio_smtp-trio"):
        row = by_client[client]
        throughput = row.best_throughput()
        growth = row.peak_growth()
        ratio = throughput / floor if floor else 0.0
        targets.add(
            f"(c) {LABELS[client]} ≥ 0.8{TIMES} raw socket ({sink.name})",
            f"{ratio:.2f}{TIMES} ({_number(throughput)} vs {_number(floor)} MiB/s)",
            ratio >= 0.8 if throughput and floor else None,
        )
        targets.add(
            f"(c) {LABELS[client]} peak memory growth < 32 MiB",
            f"{growth / MIB:.1f} MiB" if growth is not None else "n/a",
            growth < 32 * MIB if growth is not None else None,
        )


POOL_ROWS: Final = (
    ("anyio_smtp-asyncio", 1),
    ("pool-asyncio", 8),
    ("anyio_smtp-trio", 1),
    ("pool-trio", 8),
    ("pool-asyncio-send_mail", 8),
)
POOL_BASE: Final = {
    "pool-asyncio": "anyio_smtp-asyncio",
    "pool-trio": "anyio_smtp-trio",
    "pool-asyncio-send_mail": "anyio_smtp-asyncio",
}


def scenario_d(
    report: Report, runner: Runner, relay_port: int, settings: Settings, targets: Targets
) -> None:
    clients = [client for client, _ in POOL_ROWS]
    arguments = {
        client: [
            "--port",
            str(relay_port),
            "--messages",
            str(settings.pool_messages),
            "--recipients",
            "1",
            "--warmup",
            str(4 * settings.connections if connections > 1 else 3),
            "--connections",
            str(settings.connections),
        ]
        for client, connections in POOL_ROWS
    }
    rows = runner.measure("(d) pool", clients, "batch", arguments, settings.repeats)
    by_client = {row.client: row for row in rows}
    report(
        f"### (d) SMTPPool through the relay ({settings.rtt_ms:g} ms RTT): "
        f"{settings.pool_messages} messages of 1 KiB, 1 recipient, best of {settings.repeats}"
    )
    report()
    table: list[list[str]] = []
    notes: list[str] = []
    for client, connections in POOL_ROWS:
        row = by_client[client]
        if row.error is not None:
            table.append([row.label, str(connections), "—", "", "—"])
            notes.append(f"- {row.label}: {row.error}")
            continue
        base = POOL_BASE.get(client)
        versus = _ratio(row.best_rate(), by_client[base].best_rate()) if base else f"1{TIMES}"
        table.append([row.label, str(connections), _number(row.best_rate()), row.spread(), versus])
        if row.failures():
            notes.append(f"- {row.label}: {row.failures()} messages were refused")
    header = ["client", "connections", "msg/s", "runs (msg/s)", "vs one connection"]
    _report_table(report, header, table, notes, right=1)
    for client in ("pool-asyncio", "pool-trio"):
        row = by_client[client]
        single = by_client[POOL_BASE[client]].best_rate()
        rate = row.best_rate()
        if row.error is not None:
            targets.add(f"(d) {LABELS[client]} ≥ 7{TIMES} one connection", row.error, None)
            continue
        ratio = rate / single if single else 0.0
        targets.add(
            f"(d) {LABELS[client]} ≥ 7{TIMES} one connection",
            f"{ratio:.2f}{TIMES} ({_number(rate)} vs {_number(single)} msg/s)",
            ratio >= 7 if rate and single else None,
        )


E_CLIENTS: Final = (
    "anyio_smtp-asyncio-data",
    "anyio_smtp-asyncio-bdat",
    "anyio_smtp-trio-data",
    "anyio_smtp-trio-bdat",
    "smtplib",
)


def scenario_e(report: Report, runner: Runner, processes: Processes, settings: Settings) -> None:
    """Extra: DATA against BDAT in send_many, with a sink that offers CHUNKING."""
    sink = start_sink(processes, "builtin", chunking=True)
    relay_port = start_relay(processes, sink.port, settings.rtt_ms, "relay-chunking")
    columns = [
        (f"loopback, {count} rcpt", sink.port, settings.messages, count) for count in (1, 5)
    ] + [
        (f"{settings.rtt_ms:g} ms, {count} rcpt", relay_port, settings.relay_messages, count)
        for count in (1, 5)
    ]
    measured: list[dict[str, Row]] = []
    for title, port, messages, count in columns:
        arguments = {
            client: [
                "--port",
                str(port),
                "--messages",
                str(
                    max(10, messages // 4)
                    if client in LOCK_STEP and port == relay_port
                    else messages
                ),
                "--recipients",
                str(count),
                "--warmup",
                str(max(20, messages // 20) if port == sink.port else 3),
            ]
            for client in E_CLIENTS
        }
        rows = runner.measure(f"(e) {title}", E_CLIENTS, "batch", arguments, settings.repeats)
        measured.append({row.client: row for row in rows})
    report(
        f"### (e) Extra: DATA against BDAT in send_many, to {sink.description}, "
        f"best of {settings.repeats} (msg/s)"
    )
    report()
    header = ["client", "how", *(title for title, _, _, _ in columns)]
    table: list[list[str]] = []
    for client in E_CLIENTS:
        cells = [LABELS[client], HOW[client]]
        for by_client in measured:
            row = by_client[client]
            cells.append("—" if row.error is not None else _number(row.best_rate()))
        table.append(cells)
    for backend in ("asyncio", "trio"):
        cells = [f"BDAT vs DATA, {backend}", ""]
        for by_client in measured:
            cells.append(
                _ratio(
                    by_client[f"anyio_smtp-{backend}-bdat"].best_rate(),
                    by_client[f"anyio_smtp-{backend}-data"].best_rate(),
                )
            )
        table.append(cells)
    for line in _table(header, table, right=2):
        report(line)
    report()
    errors = {
        f"- {row.label}: {row.error}"
        for by_client in measured
        for row in by_client.values()
        if row.error is not None
    }
    for line in sorted(errors):
        report(line)
    if errors:
        report()


def start_haraka(folder: Path) -> tuple[Any, Sink]:
    """A private Haraka on a free loopback port: plain SMTP, no TLS, no AUTH, every
    recipient accepted, every message written to a folder, nothing leaving loopback."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.integration.servers.haraka import HARAKA_VERSION, HarakaInstance

    haraka = HarakaInstance(tls=False, accept_unauthenticated=True, log_level="notice")
    haraka.start(folder / "haraka")
    return haraka, Sink(
        "Haraka",
        haraka.port,
        f"Haraka {HARAKA_VERSION} (Node.js; PIPELINING, 8BITMIME, SMTPUTF8, SIZE; "
        "no CHUNKING), plain TCP, no AUTH, messages written to a Maildir-style folder",
    )


#: (f): the floors pipeline blindly (they count replies, they do not read them), so
#: they cannot talk to a server that refuses commands; the real clients only.
HARAKA_CLIENTS: Final = tuple(client for client in BATCH_CLIENTS if client not in FLOORS)


def _delivered_rate(result: Result) -> float:
    return (result.messages - result.failures) / result.seconds if result.seconds > 0 else 0.0


def scenario_f(report: Report, runner: Runner, folder: Path, settings: Settings) -> None:
    """Extra: the batch clients against a real Haraka on loopback."""
    report.progress("  (f) starting Haraka")
    try:
        haraka, sink = start_haraka(folder)
    except (ImportError, RuntimeError) as error:
        report("### (f) Extra: Haraka")
        report()
        report(f"Haraka could not be started: {error}")
        report()
        return
    try:
        arguments = {
            client: [
                "--port",
                str(sink.port),
                "--messages",
                str(settings.haraka_messages),
                "--recipients",
                "1",
                "--warmup",
                "5",
            ]
            for client in HARAKA_CLIENTS
        }
        rows = runner.measure("(f) Haraka", HARAKA_CLIENTS, "batch", arguments, settings.repeats)
    finally:
        haraka.stop()
    leaks = haraka.leaks()
    report(
        f"### (f) Extra: {sink.description}: 1 KiB messages, 1 recipient, one connection, "
        f"{settings.haraka_messages} messages, best of {settings.repeats}"
    )
    report()
    by_client = {row.client: row for row in rows}
    smtplib_rate = max((_delivered_rate(r) for r in by_client["smtplib"].ok), default=0.0)
    header = [
        "client",
        "how",
        "msg/s",
        "runs (msg/s)",
        "ms per message",
        "refused",
        "delivered msg/s",
        "delivered vs smtplib",
    ]
    table: list[list[str]] = []
    notes: list[str] = []
    for row in rows:
        cells = [row.label, HOW.get(row.client, "")]
        if row.error is not None:
            table.append([*cells, "—", "", "—", "—", "—", "—"])
            notes.append(f"- {row.label}: {row.error}")
            continue
        best = max(row.ok, key=lambda result: result.rate)
        delivered = max(_delivered_rate(result) for result in row.ok)
        cells += [
            _number(best.rate),
            row.spread(),
            f"{1000 / best.rate:.1f}" if best.rate else "—",
            f"{best.failures} of {best.messages}",
            _number(delivered),
            "—" if row.client == "smtplib" else _ratio(delivered, smtplib_rate),
        ]
        table.append(cells)
        reason = best.extra.get("first_failure")
        if reason:
            notes.append(f"- {row.label}: first refusal: {reason}")
    _report_table(report, header, table, notes)
    report(
        "msg/s counts every message sent, refused or not; 'delivered' only those Haraka "
        "accepted (each is in its Maildir)."
    )
    report()
    report(
        "Haraka check: its log shows no DNS query and no outbound delivery."
        if not leaks
        else f"WARNING: Haraka's log shows {len(leaks)} DNS or outbound lines: {leaks[0]}"
    )
    report()


# -- the whole run -------------------------------------------------------------------


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _header(report: Report, sink: Sink | None, only: set[str]) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    report("## anyio_smtp benchmark")
    report()
    report(f"- Date: {now}")
    report(
        f"- Machine: {cpu_count()} CPUs ({cpu_model()}), {platform.system()} "
        f"{platform.release()}, load average at start {load}"
    )
    report(f"- Python {platform.python_version()} ({platform.python_implementation()})")
    versions = ", ".join(
        f"{name} {_version(name)}"
        for name in ("anyio_smtp", "anyio", "trio", "aiosmtplib", "smtpproto")
    )
    report(f"- Versions: {versions} (anyio_smtp from the working tree: {ROOT})")
    if sink is not None:
        used = ", ".join(f"({name})" for name in sorted(only & {"a", "b", "d"}))
        if "c" in only:
            used += (", " if used else "") + "(c)"
            if sink.name == "smtp-sink":
                used += " for reference, after benchmarks/sink.py"
        report(f"- Sink: {sink.description}: {used}")
    if "e" in only:
        report("- Sink of (e): benchmarks/sink.py with CHUNKING")
    if "f" in only:
        report(
            "- Server of (f): a private Haraka on loopback (tests/integration/servers/haraka.py)"
        )
    command = shlex.join(["python", "benchmarks/run.py", *sys.argv[1:]])
    report(f"- Command: `{command}`")
    report()


def check_peers(report: Report) -> None:
    missing = [name for name in PEERS if util.find_spec(name) is None]
    if missing:
        report.progress(
            f"Missing benchmark peers: {', '.join(missing)}. Install them with:\n"
            f"    {INSTALL_HINT}\n"
            "Their rows will say 'not installed'."
        )


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark anyio_smtp against aiosmtplib, smtplib, smtpproto and a raw socket."
    )
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (small numbers)")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="round trip added by the relay")
    parser.add_argument("--messages", type=int, help="messages per run in (a) (default 5000)")
    parser.add_argument("--relay-messages", type=int, help="messages per run in (b) (default 200)")
    parser.add_argument("--pool-messages", type=int, help="messages per run in (d) (default 400)")
    parser.add_argument("--stream-mib", type=float, help="size of the message in (c) (default 50)")
    parser.add_argument("--haraka-messages", type=int, help="messages per run in (f) (default 200)")
    parser.add_argument("--repeats", type=int, help="runs of each client (default 3)")
    parser.add_argument(
        "--only",
        default="a,b,c,d",
        help=(
            "scenarios to run, e.g. 'a,c' (default a,b,c,d; extras: 'e' DATA vs BDAT, "
            "'f' a real Haraka)"
        ),
    )
    parser.add_argument(
        "--sink",
        choices=("auto", "smtp-sink", "builtin"),
        default="auto",
        help="smtp-sink when installed (auto), or benchmarks/sink.py",
    )
    parser.add_argument(
        "--chunking", action="store_true", help="builtin sink only: advertise CHUNKING (BDAT)"
    )
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    parser.add_argument(
        "--profile-dir", type=Path, help="cProfile every measured run into this folder"
    )
    arguments = parser.parse_args(argv)
    only = {part.strip().lower() for part in arguments.only.split(",") if part.strip()}
    unknown = only - {"a", "b", "c", "d", "e", "f"}
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if arguments.chunking and arguments.sink == "smtp-sink":
        parser.error("smtp-sink does not offer CHUNKING; use --sink builtin --chunking")
    quick = arguments.quick
    settings = Settings(
        messages=arguments.messages or (300 if quick else 5000),
        relay_messages=arguments.relay_messages or (40 if quick else 200),
        pool_messages=arguments.pool_messages or (80 if quick else 400),
        stream_size=int((arguments.stream_mib or (8 if quick else 50)) * MIB),
        repeats=arguments.repeats or (1 if quick else 3),
        rtt_ms=arguments.rtt_ms,
        haraka_messages=arguments.haraka_messages or (40 if quick else 200),
    )
    if arguments.profile_dir is not None:
        arguments.profile_dir.mkdir(parents=True, exist_ok=True)

    # Ctrl-C raises KeyboardInterrupt even when started with SIGINT ignored
    # (as background jobs are); SIGTERM and SIGHUP unwind the same way.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    report = Report(arguments.output)
    check_peers(report)
    targets = Targets()
    with contextlib.ExitStack() as stack:
        stack.callback(report.close)
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="anyio-smtp-bench-")))
        processes = Processes(folder)
        stack.callback(processes.stop_all)
        sink = None
        if only & {"a", "b", "c", "d"}:
            sink = start_sink(processes, arguments.sink, chunking=arguments.chunking)
        _header(report, sink, only)
        runner = Runner(report, profile_dir=arguments.profile_dir)
        started = time.monotonic()
        if "a" in only:
            assert sink is not None
            scenario_a(report, runner, sink, settings, targets)
        relay_port = None
        if only & {"b", "d"}:
            assert sink is not None
            relay_port = start_relay(processes, sink.port, settings.rtt_ms, "relay")
            measured = relay_check(report, sink, relay_port, settings.rtt_ms)
            if "b" in only:
                scenario_b(report, runner, relay_port, settings, targets, measured)
        if "c" in only:
            assert sink is not None
            stream_sinks = [sink]
            if sink.name == "smtp-sink":
                # smtp-sink parses DATA line by line (about 160 MiB/s here): the
                # target is judged against a sink that is not the bottleneck.
                stream_sinks.insert(0, start_sink(processes, "builtin", chunking=False))
            scenario_c(report, runner, stream_sinks, settings, folder, targets)
        if "d" in only:
            assert relay_port is not None
            scenario_d(report, runner, relay_port, settings, targets)
        if "e" in only:
            scenario_e(report, runner, processes, settings)
        if "f" in only:
            scenario_f(report, runner, folder, settings)
        _summary(report, targets, time.monotonic() - started)
    return 0


def _summary(report: Report, targets: Targets, seconds: float) -> None:
    if not targets.lines:
        return
    report("### Targets")
    report()
    rows = [
        [name, figure, "met" if met else "**missed**" if met is False else "not measured"]
        for name, figure, met in targets.lines
    ]
    for line in _table(["target", "this run", "status"], rows, right=3):
        report(line)
    report()
    met = sum(1 for _, _, ok in targets.lines if ok)
    report(f"{met} of {len(targets.lines)} targets met; the run took {seconds / 60:.1f} minutes.")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: every process this run started has been stopped", file=sys.stderr)
        sys.exit(130)
