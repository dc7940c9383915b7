"""Things the benchmark runner and the client processes share.

The message every client sends, the recipients, the large file for the
streaming scenario, the result record a client prints, and the memory
measurement.  Nothing here imports a peer library.
"""

from __future__ import annotations

import json
import os
import random
import resource
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

#: The envelope sender of every message.
SENDER: Final = "bench-sender@example.com"
#: Size of the small messages of scenarios (a), (b) and (d), in octets.
SMALL_MESSAGE_SIZE: Final = 1024
#: Printed by a client process in front of its JSON result line.
RESULT_PREFIX: Final = "RESULT "
MIB: Final = 1024 * 1024

_TEXT: Final = (
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when if "
    "so no will can more other time about into them some could him than first only new "
    "message server delivery queue relay mailbox header envelope transfer pipeline session "
    "protocol network latency throughput benchmark sample report measure client backend "
    "stream buffer memory socket reply command recipient sender address domain example"
)
_WORDS: Final = tuple(_TEXT.split())


def recipients(count: int) -> list[str]:
    """``count`` distinct recipient addresses."""
    return [f"bench-rcpt{index}@example.org" for index in range(count)]


def small_message(size: int = SMALL_MESSAGE_SIZE) -> bytes:
    """A plain-text message of exactly ``size`` octets with CRLF line endings.

    The same bytes go to every client, so no client pays for building an
    ``EmailMessage`` that another does not.
    """
    header = (
        b"From: Bench Sender <bench-sender@example.com>\r\n"
        b"To: Bench Recipient <bench-rcpt0@example.org>\r\n"
        b"Subject: anyio_smtp benchmark message\r\n"
        b"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
        b"Message-ID: <bench.0@example.com>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"\r\n"
    )
    line = b"The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs.\r\n"
    body = bytearray()
    while len(header) + len(body) + len(line) <= size - 2:
        body += line
    filler = size - len(header) - len(body) - 2
    body += b"x" * filler + b"\r\n"
    message = header + bytes(body)
    assert len(message) == size, len(message)
    return message


def dot_stuff(data: bytes) -> bytes:
    """The DATA form of CRLF-terminated ``data``: dot-stuffed, with the terminator."""
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


def write_large_message(path: Path, size: int, *, seed: int = 5321) -> None:
    """Write a text message of exactly ``size`` octets: lines of about 78 characters.

    About one line in 40 starts with a dot, so dot-stuffing has work to do.
    """
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    pool: list[bytes] = []
    for index in range(4096):
        words: list[str] = []
        length = 0
        target = rng.randint(60, 78)
        while length < target:
            word = rng.choice(_WORDS)
            words.append(word)
            length += len(word) + 1
        text = " ".join(words)[:78]
        if index % 40 == 0:
            text = "." + text[:77]
        pool.append(text.encode("ascii") + b"\r\n")
    header = (
        b"From: Bench Sender <bench-sender@example.com>\r\n"
        b"To: Bench Recipient <bench-rcpt0@example.org>\r\n"
        b"Subject: anyio_smtp benchmark: a large streamed message\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"\r\n"
    )
    with path.open("wb") as out:
        out.write(header)
        remaining = size - len(header)
        while remaining > 0:
            block = bytearray()
            # Whole lines while there is room; the last line fills the rest exactly.
            while len(block) < MIB and remaining - len(block) > 160:
                block += pool[rng.randrange(len(pool))]
            if remaining - len(block) <= 160:
                block += b"y" * (remaining - len(block) - 2) + b"\r\n"
            out.write(block)
            remaining -= len(block)


@dataclass
class Result:
    """What one client process measured (printed as one JSON line)."""

    client: str
    scenario: str
    messages: int = 0
    seconds: float = 0.0
    failures: int = 0
    octets: int = 0
    peak_growth: int | None = None  # bytes of RSS high-water mark above the baseline
    memory_method: str = ""
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def mib_per_second(self) -> float:
        return self.octets / MIB / self.seconds if self.seconds > 0 else 0.0

    def dumps(self) -> str:
        return RESULT_PREFIX + json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def loads(cls, line: str) -> Result:
        data = json.loads(line.removeprefix(RESULT_PREFIX))
        return cls(**data)


# -- memory --------------------------------------------------------------------------


def _status_kib(field_name: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return None


class PeakMemory:
    """The growth of this process's resident set high-water mark over a block.

    On Linux the kernel's high-water mark (``VmHWM``) is reset just before the
    block (``/proc/self/clear_refs``), so the peak seen after it belongs to the
    block alone; growth is that peak minus the resident size at the start.
    Elsewhere ``ru_maxrss`` before and after is the fallback (it can only
    see a peak above every earlier one).
    """

    def __init__(self) -> None:
        self.method = ""
        self._baseline = 0
        self._maxrss_before = 0

    def start(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self._maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.method = "ru_maxrss"
            return
        rss = _status_kib("VmRSS")
        if rss is None:
            self._maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.method = "ru_maxrss"
            return
        self._baseline = rss
        self.method = "VmHWM"

    def growth(self) -> int:
        """Bytes the peak resident set grew by since ``start()``."""
        if self.method == "VmHWM":
            peak = _status_kib("VmHWM")
            if peak is not None:
                return max(peak - self._baseline, 0) * 1024
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return max(after - self._maxrss_before, 0) * 1024


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
