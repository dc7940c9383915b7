"""A griffe extension: the reStructuredText of Sphinx-style docstrings, as Markdown.

The docstrings of anyio_smtp are written in the Sphinx style; mkdocstrings parses their
fields (``:param x:``) but renders their text as Markdown.  Before they are parsed, this
extension rewrites what Markdown would show wrongly:

* roles such as ``:class:`SMTPError``` or ``:meth:`~SMTPClient.send_mail``` become inline
  code wrapped in an optional cross-reference: a link when the object is rendered
  somewhere on the site, plain code otherwise (a standard-library name, a private
  helper), and never a warning.  A name is looked up in the scope of the object whose
  docstring names it, the way Python would find it there; ``~`` shows the last
  component only, as in Sphinx;
* a doctest (``>>>`` lines and their continuations) becomes a fenced ``pycon`` block;
* the ``::`` that introduces a literal block becomes ``:`` (the indented block that
  follows is a code block in Markdown too).
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
DOCTEST = re.compile(r"^(?P<indent>[ \t]*)>>> ")
LITERAL = re.compile(r"(?m)(?:(?<=\S)::$|^[ \t]*::\n)")


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


def doctests(text: str) -> str:
    """``text`` with each doctest fenced as a ``pycon`` block."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = DOCTEST.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = match["indent"]
        out.append(f"{indent}```pycon")
        while i < len(lines) and lines[i].strip() and lines[i].startswith(indent):
            out.append(lines[i])
            i += 1
        out.append(f"{indent}```")
    return "\n".join(out)


def literals(text: str) -> str:
    """``text`` with the ``::`` of its literal blocks made a plain ``:``."""
    return LITERAL.sub(lambda match: ":" if not match[0].endswith("\n") else "", text)


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
                text = literals(doctests(obj.docstring.value))
                obj.docstring.value = rewrite(obj, text)
