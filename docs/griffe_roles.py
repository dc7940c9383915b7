"""A griffe extension: Sphinx cross-reference roles in docstrings become links.

The docstrings of anyio_smtp are written in the Sphinx style, so they name other objects
with roles such as ``:class:`SMTPError``` or ``:meth:`~SMTPClient.send_mail```.  The
Markdown renderer of mkdocstrings knows no roles; this extension rewrites each one,
before the docstrings are parsed, into inline code wrapped in an optional cross-reference:
a link when the object is rendered somewhere on the site, plain code otherwise (a
standard-library name, a private helper), and never a warning.

A name is looked up in the scope of the object whose docstring names it, the way Python
would find it there; ``~`` shows the last component only, as in Sphinx.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

# :role:`target`, :role:`~target` or :role:`title <target>`, with an optional "py:" domain.
ROLE = re.compile(
    r":(?:py:)?(?:class|func|meth|data|attr|mod|exc|obj|const|type):"
    r"`(?P<tilde>~)?(?P<body>[^`]+)`"
)
TITLED = re.compile(r"(?P<title>.*?)\s*<(?P<target>[^<>]+)>\s*$")


def resolve(obj: griffe.Object, target: str) -> str:
    """The full path of ``target`` as named in ``obj``'s docstring (``target`` if unknown)."""
    head, dot, rest = target.partition(".")
    try:
        path = obj.resolve(head)
    except griffe.NameResolutionError:
        return target
    return f"{path}{dot}{rest}"


def rewrite(obj: griffe.Object, text: str) -> str:
    """``text`` with every Sphinx role turned into an optional cross-reference."""

    def replace(match: re.Match[str]) -> str:
        body = match["body"].strip()
        titled = TITLED.match(body)
        if titled:
            title, target = titled["title"], titled["target"]
        else:
            target = body.removesuffix("()")
            title = target.rsplit(".", 1)[-1] if match["tilde"] else target
            if body.endswith("()"):
                title += "()"
        identifier = html.escape(resolve(obj, target.lstrip(".")), quote=True)
        return (
            f'<autoref identifier="{identifier}" optional>'
            f"<code>{html.escape(title)}</code></autoref>"
        )

    return ROLE.sub(replace, text)


def objects(root: griffe.Object) -> list[griffe.Object]:
    """``root`` and every object defined under it (aliases left out: they are elsewhere)."""
    found = [root]
    for member in root.members.values():
        if not member.is_alias and isinstance(member, griffe.Object):
            found.extend(objects(member))
    return found


class SphinxRoles(griffe.Extension):
    """Rewrites Sphinx roles in every docstring of a package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in objects(pkg):
            if obj.docstring is not None:
                obj.docstring.value = rewrite(obj, obj.docstring.value)
