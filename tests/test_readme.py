"""What README.md says agrees with the code: figures, and snippets that run."""

from __future__ import annotations

import ast
import base64
import re
from pathlib import Path
from typing import Any

import anyio_smtp
import anyio_smtp.auth
import anyio_smtp.auth._oauth
from anyio_smtp._source import READ_CHUNK
from anyio_smtp._transport import WRITE_CHUNK
from tests.client.scripted import Peer, scripted

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def python_block(containing: str) -> str:
    """The one ```python block of README.md that contains ``containing``."""
    blocks: list[str] = re.findall(r"```python\n(.*?)```", README, re.S)
    blocks = [block for block in blocks if containing in block]
    assert len(blocks) == 1, f"{len(blocks)} python blocks of README.md contain {containing!r}"
    return blocks[0]


def test_the_sizes_given_are_the_ones_used() -> None:
    assert f"message data per {WRITE_CHUNK // 1024} KiB block" in README
    assert f"It is read {READ_CHUNK // 1024} KiB at a time" in README


def test_the_oauth_call_is_the_same_in_the_readme_and_the_auth_docstrings() -> None:
    (call,) = (line for line in python_block("XOAuth2").splitlines() if "login(" in line)
    assert anyio_smtp.auth.__doc__ is not None
    assert call.strip() in anyio_smtp.auth.__doc__
    oauth_doc = anyio_smtp.auth._oauth.__doc__
    assert oauth_doc is not None
    assert "login(user, mechanism=XOAuth2(user, provider))" in oauth_doc
    for doc in (anyio_smtp.auth.__doc__, oauth_doc):
        assert 'login(user, "",' not in doc


async def test_the_oauth_snippet_runs() -> None:
    token = "ya29.readme-token"
    calls: list[str] = []

    async def fetch_token() -> str:
        calls.append("fetch")
        return token

    async def script(peer: Peer) -> None:
        await peer.greet(("250-mx.test", "250-AUTH XOAUTH2 PLAIN", "250 ENHANCEDSTATUSCODES"))
        line = await peer.lone("AUTH ")
        expected = f"user=me@example.com\x01auth=Bearer {token}\x01\x01".encode()
        assert line == "AUTH XOAUTH2 " + base64.b64encode(expected).decode("ascii")
        await peer.send("235 2.7.0 Authentication successful")
        await peer.quit()

    code = compile(
        python_block("XOAuth2"), "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    )
    async with (
        scripted(script) as stream,
        anyio_smtp.connect_stream(stream, allow_insecure_auth=True) as smtp,
    ):
        namespace: dict[str, Any] = {"smtp": smtp, "fetch_token": fetch_token}
        result = eval(code, namespace)  # noqa: S307 (the README's own snippet)
        if result is not None:
            await result
        assert smtp.authenticated
    assert calls == ["fetch"]
