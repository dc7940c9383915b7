"""Send a message over implicit TLS (port 465, RFC 8314) with AUTH, on asyncio.

python examples/implicit_tls_send.py                   # against an embedded test server
SMTP_PASSWORD=... python examples/implicit_tls_send.py --host smtp.example.com --user me
"""

from __future__ import annotations

import anyio
from _embedded import Target, parse_args, target

import anyio_smtp


async def send(server: Target, recipient: str) -> anyio_smtp.SendResult:
    async with anyio_smtp.connect(
        server.host,
        server.port,
        tls=True,
        ssl_context=server.ssl_context,  # None: verify against the system's CAs
        tls_hostname=server.tls_hostname,
    ) as smtp:
        await smtp.login(server.username, server.password)
        body = b"Subject: Hello over implicit TLS\r\n\r\nSent with anyio_smtp.\r\n"
        return await smtp.send_mail(server.username, [recipient], body)


async def main() -> None:
    args = parse_args(__doc__ or "", 465)
    async with target(args, implicit_tls=True) as server:
        result = await send(server, args.to)
        print(f"Sent: {result.reply}")


if __name__ == "__main__":
    anyio.run(main)
