"""The STARTTLS example, unchanged, on trio instead of asyncio.

python examples/trio_send.py                           # against an embedded test server
"""

from __future__ import annotations

import anyio
from _embedded import parse_args, target
from starttls_send import send


async def main() -> None:
    args = parse_args(__doc__ or "", 587)
    async with target(args, implicit_tls=False) as server:
        result = await send(server, args.to)
        print(f"Sent on trio: {result.reply}")


if __name__ == "__main__":
    anyio.run(main, backend="trio")
