"""One benchmark client, in a process of its own; prints one ``RESULT {json}`` line.

Each client connects, sends a few warm-up messages on the same connection,
then sends the measured batch and reports the time it took (connection set-up
and warm-up excluded).  Scenarios:

``batch``
    ``--messages`` messages of 1 KiB, each to ``--recipients`` recipients,
    over one connection (the pool clients: over the pool).
``stream``
    one large message from ``--file``: throughput over the whole transaction
    (MAIL to the final reply) and the growth of the resident-set high-water
    mark while sending (see ``common.PeakMemory``).  Clients without a
    streaming API read the file into memory inside the measured window.

Clients: ``anyio_smtp-asyncio``, ``anyio_smtp-trio`` (``send_many`` for
batches, a binary file for streams), ``anyio_smtp-asyncio-bdat`` and
``anyio_smtp-trio-bdat`` (``send_many(..., transfer="bdat")``: needs a sink
with CHUNKING), ``anyio_smtp-asyncio-send_mail`` (a loop of ``send_mail``: no
pipelining across messages), ``anyio_smtp-asyncio-bytes``
(stream read into memory first), ``aiosmtplib``, ``smtplib``, ``smtpproto``,
``raw`` (pre-encoded bytes over a plain socket: the floor), ``anyio-floor-asyncio``
and ``anyio-floor-trio`` (the same rounds over an anyio stream: the event loop's
floor), and for the pool
``pool-asyncio``, ``pool-trio`` (``SMTPPool.send_many``) and
``pool-asyncio-send_mail`` (``SMTPPool.send_mail`` from many tasks).

    python benchmarks/clients.py smtplib batch --port 2525 --messages 2000 --recipients 5
    python benchmarks/clients.py anyio_smtp-asyncio batch --port 2525 --profile /tmp/a.prof
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import smtplib
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import Policy
from pathlib import Path
from typing import Any, Final, Literal

from common import SENDER, PeakMemory, Result, dot_stuff, recipients, small_message

Transfer = Literal["auto", "data", "bdat"]

EHLO_NAME: Final = "bench.localhost"
INSTALL_HINT: Final = "pip install -r benchmarks/requirements.txt"


@dataclass
class Options:
    client: str
    scenario: str
    host: str = "127.0.0.1"
    port: int = 25
    messages: int = 1000
    recipients: int = 1
    warmup: int = 20
    file: Path | None = None
    encoded_file: Path | None = None
    connections: int = 8
    profile: Path | None = None
    rcpts: list[str] = field(default_factory=list)

    def result(self, **values: Any) -> Result:
        return Result(client=self.client, scenario=self.scenario, **values)


class Stopwatch:
    """Times a block; profiles it too when asked (``--profile``)."""

    def __init__(self, profile: Path | None) -> None:
        self.seconds = 0.0
        self._profile = profile

    @contextmanager
    def running(self) -> Iterator[None]:
        profiler = cProfile.Profile() if self._profile is not None else None
        gc.collect()
        if profiler is not None:
            profiler.enable()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds = time.perf_counter() - start
            if profiler is not None:
                profiler.disable()
                assert self._profile is not None
                profiler.dump_stats(self._profile)
                stats = pstats.Stats(profiler, stream=sys.stderr)
                stats.sort_stats("cumulative").print_stats(40)
                stats.sort_stats("tottime").print_stats(25)


def _checked(options: Options, seconds: float, failures: int, first: list[str]) -> Result:
    """The result of a batch; an error when every message failed (no rate to speak of)."""
    if options.messages and failures >= options.messages:
        reason = first[0] if first else "unknown"
        return options.result(error=f"every message failed; the first: {reason}")
    extra = {"first_failure": first[0]} if failures and first else {}
    return options.result(
        messages=options.messages, seconds=seconds, failures=failures, extra=extra
    )


# -- anyio_smtp ----------------------------------------------------------------------


def _anyio_run(backend: str, function: Callable[[], Awaitable[Result]]) -> Result:
    import anyio

    return anyio.run(function, backend=backend)


def anyio_batch(
    options: Options, *, backend: str, lock_step: bool = False, transfer: Transfer = "auto"
) -> Result:
    import anyio_smtp

    body = small_message()
    rcpts = options.rcpts
    first_failure: list[str] = []

    async def main() -> Result:
        async with anyio_smtp.connect(options.host, options.port, ehlo_domain=EHLO_NAME) as smtp:

            async def send(count: int) -> int:
                failures = 0
                if lock_step:
                    for _ in range(count):
                        try:
                            await smtp.send_mail(SENDER, rcpts, body)
                        except anyio_smtp.ReplyError as exc:
                            failures += 1
                            first_failure.append(str(exc))
                    return failures
                batch = ((SENDER, rcpts, body) for _ in range(count))
                async for outcome in smtp.send_many(batch, transfer=transfer):
                    if not isinstance(outcome, anyio_smtp.SendResult):
                        failures += 1
                        first_failure.append(str(outcome))
                return failures

            await send(options.warmup)
            watch = Stopwatch(options.profile)
            with watch.running():
                failures = await send(options.messages)
        return _checked(options, watch.seconds, failures, first_failure)

    return _anyio_run(backend, main)


def anyio_stream(options: Options, *, backend: str, in_memory: bool = False) -> Result:
    import anyio_smtp

    assert options.file is not None
    path = options.file
    size = path.stat().st_size

    async def main() -> Result:
        async with anyio_smtp.connect(options.host, options.port, ehlo_domain=EHLO_NAME) as smtp:
            memory = PeakMemory()
            watch = Stopwatch(options.profile)
            memory.start()
            with watch.running():
                if in_memory:
                    result = await smtp.send_mail(SENDER, options.rcpts, path.read_bytes())
                else:
                    with path.open("rb") as source:
                        result = await smtp.send_mail(SENDER, options.rcpts, source, size=size)
            growth = memory.growth()
        return options.result(
            messages=1,
            seconds=watch.seconds,
            octets=size,
            failures=0 if result.reply.code == 250 else 1,
            peak_growth=growth,
            memory_method=memory.method,
        )

    return _anyio_run(backend, main)


def pool_batch(options: Options, *, backend: str, tasks: int = 0) -> Result:
    """The pool: ``send_many`` (or ``send_mail`` from ``tasks`` tasks at once)."""
    import anyio

    import anyio_smtp

    pool_class: Any = getattr(anyio_smtp, "SMTPPool", None)
    if pool_class is None:
        return options.result(
            error="pool not available: anyio_smtp.SMTPPool is not importable in this tree"
        )
    body = small_message()
    rcpts = options.rcpts
    first_failure: list[str] = []

    def factory() -> anyio_smtp.SessionOpener:
        return anyio_smtp.connect(options.host, options.port, ehlo_domain=EHLO_NAME)

    async def main() -> Result:
        async with pool_class(factory, max_connections=options.connections) as pool:

            async def send(count: int) -> int:
                failures = 0
                if tasks:
                    left = count

                    async def worker() -> None:
                        nonlocal left, failures
                        while left > 0:
                            left -= 1
                            try:
                                await pool.send_mail(SENDER, rcpts, body)
                            except anyio_smtp.SMTPError as exc:
                                failures += 1
                                first_failure.append(str(exc))

                    async with anyio.create_task_group() as group:
                        for _ in range(tasks):
                            group.start_soon(worker)
                    return failures
                batch = ((SENDER, rcpts, body) for _ in range(count))
                async for outcome in pool.send_many(batch):
                    if not isinstance(outcome, anyio_smtp.SendResult):
                        failures += 1
                        first_failure.append(str(outcome))
                return failures

            await send(options.warmup)
            watch = Stopwatch(options.profile)
            with watch.running():
                failures = await send(options.messages)
        return _checked(options, watch.seconds, failures, first_failure)

    return _anyio_run(backend, main)


# -- aiosmtplib ----------------------------------------------------------------------


def aiosmtplib_run(options: Options) -> Result:
    import asyncio

    import aiosmtplib

    async def main() -> Result:
        smtp = aiosmtplib.SMTP(
            hostname=options.host,
            port=options.port,
            local_hostname=EHLO_NAME,
            use_tls=False,
            start_tls=False,
        )
        await smtp.connect()
        try:
            if options.scenario == "stream":
                assert options.file is not None
                memory = PeakMemory()
                watch = Stopwatch(options.profile)
                memory.start()
                with watch.running():
                    data = options.file.read_bytes()
                    await smtp.sendmail(SENDER, options.rcpts, data)
                return options.result(
                    messages=1,
                    seconds=watch.seconds,
                    octets=len(data),
                    peak_growth=memory.growth(),
                    memory_method=memory.method,
                )
            body = small_message()

            async def send(count: int) -> int:
                failures = 0
                for _ in range(count):
                    try:
                        await smtp.sendmail(SENDER, options.rcpts, body)
                    except aiosmtplib.SMTPResponseException:
                        failures += 1
                return failures

            await send(options.warmup)
            watch = Stopwatch(options.profile)
            with watch.running():
                failures = await send(options.messages)
            return options.result(
                messages=options.messages, seconds=watch.seconds, failures=failures
            )
        finally:
            await smtp.quit()

    return asyncio.run(main())


# -- smtplib -------------------------------------------------------------------------


def smtplib_run(options: Options) -> Result:
    with smtplib.SMTP(options.host, options.port, local_hostname=EHLO_NAME) as smtp:
        smtp.ehlo()
        if options.scenario == "stream":
            assert options.file is not None
            memory = PeakMemory()
            watch = Stopwatch(options.profile)
            memory.start()
            with watch.running():
                data = options.file.read_bytes()
                smtp.sendmail(SENDER, options.rcpts, data)
            return options.result(
                messages=1,
                seconds=watch.seconds,
                octets=len(data),
                peak_growth=memory.growth(),
                memory_method=memory.method,
            )
        body = small_message()

        def send(count: int) -> int:
            failures = 0
            for _ in range(count):
                try:
                    smtp.sendmail(SENDER, options.rcpts, body)
                except smtplib.SMTPResponseException:
                    failures += 1
            return failures

        send(options.warmup)
        watch = Stopwatch(options.profile)
        with watch.running():
            failures = send(options.messages)
        return options.result(messages=options.messages, seconds=watch.seconds, failures=failures)


# -- smtpproto -----------------------------------------------------------------------


class _PreEncoded(EmailMessage):
    """A message whose bytes are already made.

    smtpproto sends only ``EmailMessage`` objects and serialises them itself;
    handing it the same bytes as the other clients measures its protocol and
    I/O, not the ``email`` package.
    """

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = data

    def as_bytes(self, unixfrom: bool = False, policy: Policy[Any] | None = None) -> bytes:
        return self._data

    def __contains__(self, name: str) -> bool:
        return False  # no Bcc to strip


def smtpproto_run(options: Options) -> Result:
    import anyio
    from smtpproto.client import AsyncSMTPClient
    from smtpproto.protocol import SMTPException

    client = AsyncSMTPClient(options.host, options.port, domain=EHLO_NAME)

    async def main() -> Result:
        async with client.connect() as session:
            if options.scenario == "stream":
                assert options.file is not None
                memory = PeakMemory()
                watch = Stopwatch(options.profile)
                memory.start()
                with watch.running():
                    data = options.file.read_bytes()
                    await session.send_message(
                        _PreEncoded(data), sender=SENDER, recipients=options.rcpts
                    )
                return options.result(
                    messages=1,
                    seconds=watch.seconds,
                    octets=len(data),
                    peak_growth=memory.growth(),
                    memory_method=memory.method,
                )
            message = _PreEncoded(small_message())

            async def send(count: int) -> int:
                failures = 0
                for _ in range(count):
                    try:
                        await session.send_message(message, sender=SENDER, recipients=options.rcpts)
                    except SMTPException:
                        failures += 1
                return failures

            await send(options.warmup)
            watch = Stopwatch(options.profile)
            with watch.running():
                failures = await send(options.messages)
            return options.result(
                messages=options.messages, seconds=watch.seconds, failures=failures
            )

    return anyio.run(main)


# -- the raw-socket floor ------------------------------------------------------------


class _Replies:
    """Counts SMTP replies on a blocking socket (their last lines: ``NNN `` or ``NNN``)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""
        self._position = 0

    def expect(self, count: int) -> list[int]:
        codes: list[int] = []
        while True:
            buffer = self._buffer
            while len(codes) < count:
                end = buffer.find(b"\r\n", self._position)
                if end < 0:
                    break
                if end - self._position == 3 or buffer[self._position + 3] == 0x20:
                    codes.append(int(buffer[self._position : self._position + 3]))
                self._position = end + 2
            if len(codes) == count:
                return codes
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self._buffer = buffer[self._position :] + chunk
            self._position = 0


def _raw_connect(options: Options) -> tuple[socket.socket, _Replies]:
    sock = socket.create_connection((options.host, options.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    replies = _Replies(sock)
    replies.expect(1)
    sock.sendall(f"EHLO {EHLO_NAME}\r\n".encode())
    replies.expect(1)
    return sock, replies


def _bad(codes: list[int]) -> int:
    return sum(code >= 400 for code in codes)


def raw_run(options: Options) -> Result:
    """Pre-encoded bytes with ``socket.sendall``, pipelined as RFC 2920 allows.

    A batch goes in rounds like anyio_smtp's: each write carries one message's
    data and the next message's MAIL, RCPTs and DATA, and waits for their
    replies (DATA must get its 354 before data may follow).
    """
    sock, replies = _raw_connect(options)
    envelope = f"MAIL FROM:<{SENDER}>\r\n".encode() + b"".join(
        f"RCPT TO:<{rcpt}>\r\n".encode() for rcpt in options.rcpts
    )
    envelope += b"DATA\r\n"
    owed = len(options.rcpts) + 2
    try:
        if options.scenario == "stream":
            assert options.encoded_file is not None
            memory = PeakMemory()
            watch = Stopwatch(options.profile)
            memory.start()
            data = options.encoded_file.read_bytes()
            with watch.running():
                sock.sendall(envelope)
                failures = _bad(replies.expect(owed))
                sock.sendall(data)
                failures += _bad(replies.expect(1))
            assert options.file is not None
            return options.result(
                messages=1,
                seconds=watch.seconds,
                octets=options.file.stat().st_size,
                failures=failures,
                peak_growth=memory.growth(),
                memory_method=memory.method,
            )
        data = dot_stuff(small_message())
        follow = data + envelope

        def send(count: int) -> int:
            if count == 0:
                return 0
            sock.sendall(envelope)
            failures = _bad(replies.expect(owed))
            for _ in range(count - 1):
                sock.sendall(follow)
                failures += _bad(replies.expect(owed + 1))
            sock.sendall(data)
            return failures + _bad(replies.expect(1))

        send(options.warmup)
        watch = Stopwatch(options.profile)
        with watch.running():
            failures = send(options.messages)
        sock.sendall(b"QUIT\r\n")
        replies.expect(1)
        return options.result(messages=options.messages, seconds=watch.seconds, failures=failures)
    finally:
        sock.close()


def anyio_floor(options: Options, *, backend: str) -> Result:
    """The raw floor's rounds over an anyio stream: what an event loop alone costs.

    The same pre-encoded bytes and the same rounds as ``raw_run`` (one write and
    one read per message), with no protocol code, deadlines or tasks: the most
    any asyncio or trio client can do at one round trip per message.
    """
    import anyio

    envelope = f"MAIL FROM:<{SENDER}>\r\n".encode() + b"".join(
        f"RCPT TO:<{rcpt}>\r\n".encode() for rcpt in options.rcpts
    )
    envelope += b"DATA\r\n"
    owed = len(options.rcpts) + 2
    data = dot_stuff(small_message())
    follow = data + envelope

    async def main() -> Result:
        stream = await anyio.connect_tcp(options.host, options.port)
        async with stream:
            buffer = b""

            async def expect(count: int) -> int:
                nonlocal buffer
                bad = seen = position = 0
                while True:
                    while seen < count:
                        end = buffer.find(b"\r\n", position)
                        if end < 0:
                            break
                        if end - position == 3 or buffer[position + 3] == 0x20:
                            seen += 1
                            bad += buffer[position] >= 0x34  # 4xx or 5xx
                        position = end + 2
                    if seen == count:
                        buffer = buffer[position:]
                        return bad
                    buffer = buffer[position:] + await stream.receive()
                    position = 0

            await expect(1)
            await stream.send(f"EHLO {EHLO_NAME}\r\n".encode())
            await expect(1)

            async def send(count: int) -> int:
                if count == 0:
                    return 0
                await stream.send(envelope)
                failures = await expect(owed)
                for _ in range(count - 1):
                    await stream.send(follow)
                    failures += await expect(owed + 1)
                await stream.send(data)
                return failures + await expect(1)

            await send(options.warmup)
            watch = Stopwatch(options.profile)
            with watch.running():
                failures = await send(options.messages)
            await stream.send(b"QUIT\r\n")
            await expect(1)
        return options.result(messages=options.messages, seconds=watch.seconds, failures=failures)

    return _anyio_run(backend, main)


# -- dispatch ------------------------------------------------------------------------

RUNNERS: Final[dict[tuple[str, str], Callable[[Options], Result]]] = {
    ("anyio_smtp-asyncio", "batch"): lambda o: anyio_batch(o, backend="asyncio"),
    ("anyio_smtp-trio", "batch"): lambda o: anyio_batch(o, backend="trio"),
    ("anyio_smtp-asyncio-send_mail", "batch"): lambda o: anyio_batch(
        o, backend="asyncio", lock_step=True
    ),
    ("anyio_smtp-asyncio-bdat", "batch"): lambda o: anyio_batch(
        o, backend="asyncio", transfer="bdat"
    ),
    ("anyio_smtp-trio-bdat", "batch"): lambda o: anyio_batch(o, backend="trio", transfer="bdat"),
    ("anyio_smtp-asyncio-data", "batch"): lambda o: anyio_batch(
        o, backend="asyncio", transfer="data"
    ),
    ("anyio_smtp-trio-data", "batch"): lambda o: anyio_batch(o, backend="trio", transfer="data"),
    ("anyio_smtp-asyncio", "stream"): lambda o: anyio_stream(o, backend="asyncio"),
    ("anyio_smtp-trio", "stream"): lambda o: anyio_stream(o, backend="trio"),
    ("anyio_smtp-asyncio-bytes", "stream"): lambda o: anyio_stream(
        o, backend="asyncio", in_memory=True
    ),
    ("pool-asyncio", "batch"): lambda o: pool_batch(o, backend="asyncio"),
    ("pool-trio", "batch"): lambda o: pool_batch(o, backend="trio"),
    ("pool-asyncio-send_mail", "batch"): lambda o: pool_batch(
        o, backend="asyncio", tasks=2 * o.connections
    ),
    ("aiosmtplib", "batch"): aiosmtplib_run,
    ("aiosmtplib", "stream"): aiosmtplib_run,
    ("smtplib", "batch"): smtplib_run,
    ("smtplib", "stream"): smtplib_run,
    ("smtpproto", "batch"): smtpproto_run,
    ("smtpproto", "stream"): smtpproto_run,
    ("raw", "batch"): raw_run,
    ("anyio-floor-asyncio", "batch"): lambda o: anyio_floor(o, backend="asyncio"),
    ("anyio-floor-trio", "batch"): lambda o: anyio_floor(o, backend="trio"),
    ("raw", "stream"): raw_run,
}


def run(options: Options) -> Result:
    runner = RUNNERS.get((options.client, options.scenario))
    if runner is None:
        return options.result(error=f"no {options.scenario!r} benchmark for {options.client}")
    try:
        return runner(options)
    except ImportError as exc:
        package = (exc.name or "a peer").split(".")[0]
        return options.result(error=f"not installed: {package} ({INSTALL_HINT})")
    except Exception as exc:  # reported in the table, not raised
        return options.result(error=f"{type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run one benchmark client.")
    parser.add_argument("client", choices=sorted({client for client, _ in RUNNERS}))
    parser.add_argument("scenario", choices=("batch", "stream"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--recipients", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--file", type=Path, help="the large message (stream)")
    parser.add_argument("--encoded-file", type=Path, help="its DATA form (stream, raw)")
    parser.add_argument("--connections", type=int, default=8, help="pool size (pool clients)")
    parser.add_argument("--profile", type=Path, help="cProfile the measured part into this file")
    arguments = parser.parse_args(argv)
    options = Options(
        client=arguments.client,
        scenario=arguments.scenario,
        host=arguments.host,
        port=arguments.port,
        messages=arguments.messages,
        recipients=arguments.recipients,
        warmup=arguments.warmup,
        file=arguments.file,
        encoded_file=arguments.encoded_file,
        connections=arguments.connections,
        profile=arguments.profile,
        rcpts=recipients(arguments.recipients),
    )
    print(run(options).dumps(), flush=True)


if __name__ == "__main__":
    main()
