"""``probe``: what a server offers, before and after TLS, and whether its certificate verifies."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

import anyio

from ._common import (
    EXIT_CODES_EPILOG,
    CLIError,
    ExitCode,
    Transcript,
    add_common_options,
    add_mode_options,
    client_ssl_context,
    dump_json,
    parse_target,
)

if TYPE_CHECKING:
    import ssl

    from .. import Capabilities

__all__ = ("register",)


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "probe",
        help="show what a server offers: greeting, EHLO before and after TLS, the TLS "
        "version, cipher and certificate, AUTH mechanisms, SIZE, LIMITS (sends no mail)",
        description="Connect, say EHLO, upgrade with STARTTLS when offered (or start with "
        "TLS on port 465 or with --tls), say EHLO again, and QUIT. The certificate must "
        "verify against the system's trust store or --ca-file; if it does not, its details "
        "are shown, the session is not continued, and the exit status is 4.",
        epilog=EXIT_CODES_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "target",
        metavar="HOST[:PORT]",
        help="the server; IPv6 in brackets ([::1]:587); the port defaults to 25",
    )
    add_mode_options(
        parser.add_mutually_exclusive_group(),
        tls="implicit TLS from the first byte (default on port 465)",
        plain="do not try STARTTLS (by default it is used when offered)",
    )
    parser.add_argument(
        "--require-starttls",
        action="store_true",
        help="fail (exit status 4) when the server does not offer STARTTLS",
    )
    parser.add_argument(
        "--ca-file",
        metavar="FILE",
        help="trust only the CA certificates in this PEM file (default: the system's store)",
    )
    parser.add_argument(
        "--tls-hostname",
        metavar="NAME",
        help="the name the certificate must carry (default: the host)",
    )
    parser.add_argument(
        "--ehlo", metavar="NAME", help="the name to give in EHLO (default: this host's name)"
    )
    add_common_options(parser)
    parser.set_defaults(run=run)


def _capabilities(capabilities: Capabilities) -> dict[str, Any]:
    return {
        "extensions": {keyword: list(params) for keyword, params in capabilities.items()},
        "starttls": "STARTTLS" in capabilities,
        "auth": sorted(capabilities.auth_mechanisms),
        "size": capabilities.size_limit,
        "limits": capabilities.limits,
    }


def _name(parts: Any) -> str:
    return ", ".join(f"{key}={value}" for rdn in parts for key, value in rdn)


def _certificate(peer: dict[str, Any] | None, der: bytes | None) -> dict[str, Any] | None:
    import hashlib
    import ssl

    if der is None:
        return None
    details: dict[str, Any] = {"sha256": hashlib.sha256(der).hexdigest()}
    if peer:
        not_after = peer.get("notAfter")
        expires = None if not_after is None else ssl.cert_time_to_seconds(not_after)
        details.update(
            subject=_name(peer.get("subject", ())),
            issuer=_name(peer.get("issuer", ())),
            san=[f"{kind}:{value}" for kind, value in peer.get("subjectAltName", ())],
            not_before=peer.get("notBefore"),
            not_after=not_after,
            days_left=None if expires is None else int((expires - time.time()) // 86400),
        )
    return details


async def _read_reply(stream: Any, buffer: bytearray) -> str:
    lines = []
    while True:
        while b"\n" not in buffer:
            chunk = await stream.receive()
            buffer.extend(chunk)
            if len(buffer) > 65536:
                raise CLIError("the server's reply is too long", ExitCode.CONNECTION)
        end = buffer.index(b"\n")
        line = bytes(buffer[:end]).rstrip(b"\r").decode("utf-8", "replace")
        del buffer[: end + 1]
        lines.append(line)
        if line[3:4] != "-":
            return "\n".join(lines)


async def fetch_certificate(
    host: str,
    port: int,
    *,
    starttls: bool,
    hostname: str,
    timeout: float,
    verify: bool,
    ctx: ssl.SSLContext | None = None,
) -> tuple[dict[str, Any] | None, bytes | None]:
    """The server's certificate, on a connection of its own that is closed at once.

    With ``verify=False`` the chain is not checked: only for DISPLAYING a certificate that
    failed verification; nothing is sent on such a connection but the TLS handshake
    (after ``EHLO``/``STARTTLS`` in the clear) and it is closed right away.
    """
    import ssl

    from anyio.streams.tls import TLSAttribute, TLSStream

    if verify:
        assert ctx is not None
        context = ctx
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # display only; see the docstring
    with anyio.fail_after(timeout):
        stream: Any = await anyio.connect_tcp(host, port)
        try:
            if starttls:
                buffer = bytearray()
                await _read_reply(stream, buffer)
                await stream.send(b"EHLO probe.invalid\r\n")
                await _read_reply(stream, buffer)
                await stream.send(b"STARTTLS\r\n")
                reply = await _read_reply(stream, buffer)
                if not reply.startswith("220") or buffer:
                    return None, None
            stream = await TLSStream.wrap(
                stream, server_side=False, hostname=hostname, ssl_context=context
            )
            der = stream.extra(TLSAttribute.peer_certificate_binary)
            peer = stream.extra(TLSAttribute.peer_certificate) if verify else None
            return peer, der
        finally:
            await anyio.aclose_forcefully(stream)


async def _unverified_details(
    args: argparse.Namespace, host: str, port: int, *, starttls: bool, hostname: str
) -> tuple[dict[str, Any] | None, bytes | None]:
    """What a certificate that failed verification says, for display only.

    First with the chain verified but not the host name (a name mismatch then still shows
    every field), else without any verification (then only its fingerprint is known).
    """
    import ssl

    chain_only = client_ssl_context(args.ca_file)
    chain_only.check_hostname = False
    try:
        return await fetch_certificate(
            host,
            port,
            starttls=starttls,
            hostname=hostname,
            timeout=args.timeout,
            verify=True,
            ctx=chain_only,
        )
    except ssl.SSLError:
        pass
    return await fetch_certificate(
        host, port, starttls=starttls, hostname=hostname, timeout=args.timeout, verify=False
    )


async def probe(args: argparse.Namespace) -> tuple[ExitCode, dict[str, Any], list[str]]:
    import anyio_smtp
    from anyio_smtp import audit

    target = parse_target(args.target)
    port = target.port or 25
    mode = args.mode or ("tls" if port == 465 else "starttls")
    hostname = args.tls_hostname or target.host
    ctx = client_ssl_context(args.ca_file)
    tls_info: dict[str, Any] = {}

    def hook(event: audit.AuditEvent) -> None:
        if isinstance(event, audit.GreetingReceived):
            data["greeting"] = f"{event.reply.code} {event.reply.message}"
        elif isinstance(event, audit.TLSStarted):
            tls_info.update(version=event.version, cipher=event.cipher)

    label = f"[{target.host}]:{port}" if ":" in target.host else f"{target.host}:{port}"
    data: dict[str, Any] = {
        "server": label,
        "mode": mode,
        "greeting": None,
        "ehlo_greeting": None,
        "before_tls": None,
        "after_tls": None,
        "starttls_offered": None,
        "tls": None,
        "certificate": None,
        "verified": None,
        "error": None,
    }
    code = ExitCode.SENT
    started = time.monotonic()
    try:
        async with anyio_smtp.connect(
            target.host,
            port,
            tls=mode == "tls",
            ssl_context=ctx,
            tls_hostname=args.tls_hostname,
            ehlo_domain=args.ehlo,
            timeout=args.timeout,
            audit=hook,
        ) as smtp:
            data["ehlo_greeting"] = smtp.capabilities.greeting
            if mode == "tls":
                data["after_tls"] = _capabilities(smtp.capabilities)
            else:
                data["before_tls"] = _capabilities(smtp.capabilities)
                data["starttls_offered"] = "STARTTLS" in smtp.capabilities
                if mode == "starttls" and data["starttls_offered"]:
                    await smtp.starttls(ssl_context=ctx)
                    data["after_tls"] = _capabilities(smtp.capabilities)
                elif args.require_starttls:
                    data["error"] = {
                        "type": "ExtensionNotSupportedError",
                        "message": "the server does not offer STARTTLS",
                    }
                    code = ExitCode.CONNECTION
            await smtp.quit()
    except (anyio_smtp.SMTPError, OSError, TimeoutError) as error:
        code = ExitCode.CONNECTION
        if isinstance(error, anyio_smtp.ReplyError):
            code = ExitCode.TRANSIENT if error.is_transient else ExitCode.REFUSED
        data["error"] = {"type": type(error).__name__, "message": str(error)}
        if isinstance(error, anyio_smtp.TLSCertificateError):
            data["verified"] = False
    if tls_info:
        data["tls"] = tls_info
    starttls = mode == "starttls"
    if tls_info or data["verified"] is False:
        try:
            if data["verified"] is False:
                # Only to display what the server presented; the session is over.
                peer, der = await _unverified_details(
                    args, target.host, port, starttls=starttls, hostname=hostname
                )
            else:
                peer, der = await fetch_certificate(
                    target.host,
                    port,
                    starttls=starttls,
                    hostname=hostname,
                    timeout=args.timeout,
                    verify=True,
                    ctx=ctx,
                )
                data["verified"] = True
            data["certificate"] = _certificate(peer, der)
        except (OSError, TimeoutError, anyio.BrokenResourceError, CLIError) as error:
            data["certificate_error"] = f"{type(error).__name__}: {error}"
            if data["verified"] is None:
                data["verified"] = False
                code = ExitCode.CONNECTION
    data["elapsed_s"] = round(time.monotonic() - started, 6)
    data = {"ok": code == ExitCode.SENT, "exit_code": int(code), **data}
    return code, data, _summary(data)


def _summary(data: dict[str, Any]) -> list[str]:
    lines = [f"server:    {data['server']} ({data['mode']})"]
    if data["greeting"] is not None:
        lines.append(f"greeting:  {data['greeting']}")
    if data["ehlo_greeting"]:
        lines.append(f"ehlo:      {data['ehlo_greeting']}")
    for key, title in (("before_tls", "before TLS"), ("after_tls", "after TLS")):
        caps = data[key]
        if caps is None:
            continue
        lines.append(f"{title}:")
        lines.append(f"  STARTTLS: {'offered' if caps['starttls'] else 'not offered'}")
        lines.append(f"  AUTH:     {' '.join(caps['auth']) or '(none)'}")
        lines.append(f"  SIZE:     {caps['size'] if caps['size'] is not None else '(not given)'}")
        if caps["limits"]:
            limits = " ".join(f"{k}={v}" for k, v in caps["limits"].items())
            lines.append(f"  LIMITS:   {limits}")
        for keyword, params in caps["extensions"].items():
            lines.append(f"  {keyword} {' '.join(params)}".rstrip())
    if data["tls"]:
        lines.append(f"tls:       {data['tls']['version']} {data['tls']['cipher']}")
    cert = data["certificate"]
    if cert is not None:
        lines.append("certificate:")
        for key in ("subject", "issuer", "san", "not_before", "not_after", "days_left", "sha256"):
            if key in cert:
                value = cert[key]
                lines.append(f"  {key}: {', '.join(value) if isinstance(value, list) else value}")
    if data["verified"] is not None:
        lines.append(f"verified:  {'yes' if data['verified'] else 'NO'}")
    if data.get("certificate_error"):
        lines.append(f"certificate error: {data['certificate_error']}")
    if data["error"] is not None:
        lines.append(f"error:     {data['error']['message']}")
    lines.append("result:    " + ("ok" if data["ok"] else f"FAILED (exit {data['exit_code']})"))
    return lines


def run(args: argparse.Namespace) -> int:
    try:
        with Transcript(args.verbose):
            code, data, lines = anyio.run(probe, args, backend=args.backend)
    except CLIError as error:
        print(f"anyio-smtp probe: {error}", file=sys.stderr)
        return int(error.code)
    if args.json:
        dump_json(data)
    else:
        print("\n".join(lines))
    return int(code)
