"""Send a message over submission with STARTTLS and AUTH, on asyncio.

python examples/starttls_send.py                       # against an embedded test server
SMTP_PASSWORD=... python examples/starttls_send.py --host smtp.example.com --user me@example.com
"""

from __future__ import annotations

import ssl
from email.message import EmailMessage

import anyio
from _embedded import Target, parse_args, target

import anyio_smtp


def build_message(sender: str, recipient: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = "Hello over STARTTLS"
    message.set_content("Sent with anyio_smtp.\n")
    return message


async def send(server: Target, recipient: str) -> anyio_smtp.SendResult:
    context = server.ssl_context or ssl.create_default_context()
    async with anyio_smtp.connect_starttls(
        server.host, server.port, ssl_context=context, tls_hostname=server.tls_hostname
    ) as smtp:
        await smtp.login(server.username, server.password)
        return await smtp.send_message(build_message(server.username, recipient))


async def main() -> None:
    args = parse_args(__doc__ or "", 587)
    async with target(args, implicit_tls=False) as server:
        result = await send(server, args.to)
        print(f"Sent: {result.reply} (accepted: {', '.join(result.accepted)})")


if __name__ == "__main__":
    anyio.run(main)
