"""MkDocs hooks of the documentation site: the command-line reference.

A page that holds the line ``<!-- cli-reference -->`` gets, in its place, the reference
of ``python -m anyio_smtp`` made from the parser itself,
``anyio_smtp.__main__.build_parser()``: every command and subcommand, found by walking
the parser recursively, with its usage, its description and each argument's help,
default and choices.  A command added to the parser appears without any change here.
"""

from __future__ import annotations

import argparse
import html
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

MARKER = "<!-- cli-reference -->"
#: The width usage lines are wrapped at, whatever the terminal of the build.
WIDTH = 88


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """MkDocs event: put the command-line reference where a page asks for it."""
    if MARKER not in markdown:
        return markdown
    from anyio_smtp.__main__ import build_parser

    return markdown.replace(MARKER, render(build_parser()))


def render(parser: argparse.ArgumentParser, level: int = 2) -> str:
    """The Markdown reference of ``parser`` and, below it, of each of its subcommands."""
    return "\n".join(_sections(parser, level, (), summary=None))


@contextmanager
def _columns(width: int) -> Iterator[None]:
    """argparse wraps at the terminal's width (``COLUMNS``): fix it for the build."""
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width + 2)
    try:
        yield
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def anchor(path: tuple[str, ...]) -> str:
    """The id of a command's section, from its subcommand names: ``cli``, ``cli-demo``."""
    return "-".join(["cli", *(re.sub(r"[^a-z0-9]+", "-", name.lower()) for name in path)])


def _sections(
    parser: argparse.ArgumentParser, level: int, path: tuple[str, ...], summary: str | None
) -> Iterator[str]:
    yield f"{'#' * level} `{parser.prog}` {{ #{anchor(path)} }}\n"
    text = parser.description or summary
    if text:
        yield f"{_expand(text, parser.prog)}\n"
    with _columns(WIDTH):
        usage = parser.format_usage().strip()
    yield f"```text\n{usage}\n```\n"
    subcommands: list[tuple[str, argparse.ArgumentParser, str | None]] = []
    # argparse keeps its groups and actions in private attributes; they are the only
    # record of what a parser accepts.
    for group in parser._action_groups:
        actions = [action for action in group._group_actions if action.help != argparse.SUPPRESS]
        if not actions:
            continue
        commands = all(isinstance(action, argparse._SubParsersAction) for action in actions)
        title: str | None = group.title
        if commands and title == "positional arguments":
            title = "commands"
        yield f"**{_title(title)}**\n"
        if group.description:
            yield f"{_expand(group.description, parser.prog)}\n"
        column = "command" if commands else "argument"
        yield f"| {column} | description | default |\n|---|---|---|"
        for action in actions:
            if isinstance(action, argparse._SubParsersAction):
                subcommands.extend(_subcommands(action))
                for name, shown, help_text in _subcommand_rows(action):
                    target = anchor((*path, name))
                    summary = _cell(html.escape(help_text, quote=False))
                    yield f"| [`{shown}`](#{target}) | {summary} | |"
            else:
                yield _row(action, parser.prog)
        yield ""
    if parser.epilog:
        yield f"{_expand(parser.epilog, parser.prog)}\n"
    for name, subparser, summary_text in subcommands:
        yield from _sections(subparser, min(level + 1, 6), (*path, name), summary_text)


def _title(title: str | None) -> str:
    title = title or "arguments"
    return title[:1].upper() + title[1:]


def _subcommands(
    action: argparse._SubParsersAction[argparse.ArgumentParser],
) -> list[tuple[str, argparse.ArgumentParser, str | None]]:
    """Each subcommand's name and parser once (aliases share it), with its one-line help."""
    helps = {choice.dest: choice.help for choice in action._choices_actions}
    seen: list[tuple[str, argparse.ArgumentParser, str | None]] = []
    for name, subparser in action.choices.items():
        if all(subparser is not known for _, known, _ in seen):
            seen.append((name, subparser, helps.get(name)))
    return seen


def _subcommand_rows(
    action: argparse._SubParsersAction[argparse.ArgumentParser],
) -> Iterator[tuple[str, str, str]]:
    for choice in action._choices_actions:
        if choice.help == argparse.SUPPRESS:
            continue
        # The name, with its aliases when it has some: "send (s)".
        shown = choice.metavar if isinstance(choice.metavar, str) else choice.dest
        yield choice.dest, shown, str(choice.help or "")


def _row(action: argparse.Action, prog: str) -> str:
    if action.option_strings:
        metavar = _metavar(action)
        names = ", ".join(
            f"`{option}{' ' + metavar if metavar else ''}`" for option in action.option_strings
        )
    else:
        names = f"`{_metavar(action) or action.dest}`"
    description = _expand(action.help or "", prog, action)
    if action.choices is not None:
        choices = ", ".join(f"`{choice}`" for choice in action.choices)
        description = f"{description}<br>Choices: {choices}."
    if action.required and action.option_strings:
        description = f"{description}<br>Required."
    return f"| {names} | {_cell(description)} | {_default(action)} |"


def _metavar(action: argparse.Action) -> str:
    """How the value of an argument is written in its usage (empty for a flag)."""
    if action.nargs == 0:
        return ""
    if isinstance(action.metavar, tuple):
        return " ".join(action.metavar)
    if action.metavar is not None:
        return action.metavar
    if action.choices is not None:
        return "{" + ",".join(str(choice) for choice in action.choices) + "}"
    return action.dest.upper() if action.option_strings else action.dest


def _default(action: argparse.Action) -> str:
    default = action.default
    if (
        default is None
        or default is argparse.SUPPRESS
        or action.nargs == 0
        or isinstance(action, (argparse._HelpAction, argparse._VersionAction))
    ):
        return ""
    if isinstance(default, (list, tuple)) and not default:
        return ""
    return f"`{default}`"


def _expand(text: str, prog: str, action: argparse.Action | None = None) -> str:
    """A help text with its ``%(...)s`` fields filled in, as ``--help`` shows it.

    The text is plain text, so what Markdown or HTML would read as markup
    (``<address>``) is escaped.
    """
    if "%" not in text:
        return html.escape(text, quote=False)
    params: dict[str, object] = {"prog": prog}
    if action is not None:
        params.update(vars(action))
        if action.choices is not None:
            params["choices"] = ", ".join(str(choice) for choice in action.choices)
    return html.escape(text % params, quote=False)


def _cell(text: str) -> str:
    """``text`` made safe for one cell of a Markdown table."""
    text = re.sub(r"\s*\n\s*", " ", text).replace("|", "\\|").strip()
    return text.removeprefix("<br>")
