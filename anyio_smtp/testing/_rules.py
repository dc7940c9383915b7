"""Reply overrides: the rules set with ``SMTPTestServer.reply()`` and how they match."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = ("Rule", "RuleBook", "is_positive", "split_reply")


def split_reply(text: str) -> list[str]:
    """The lines of a reply given as one string (``\\n``-separated, CR tolerated)."""
    lines = [line.rstrip("\r") for line in text.split("\n")]
    if len(lines) > 1 and not lines[-1]:
        lines.pop()
    return lines


def is_positive(text: str) -> bool:
    """Whether a reply is 2xx or 3xx."""
    return text[:1] in ("2", "3")


def check_reply(text: str) -> str:
    """Validate a reply given by a test and return its lines joined with ``\\n``.

    :raises ValueError: if a line does not start with a 3-digit code
    """
    lines = split_reply(text)
    if not all(len(line) >= 3 and line[:3].isascii() and line[:3].isdigit() for line in lines):
        raise ValueError(f"every reply line must start with a 3-digit code: {text!r}")
    return "\n".join(lines)


def check_times(times: int | None) -> None:
    """Validate a ``times=`` argument.

    :raises ValueError: if it is neither ``None`` nor positive
    """
    if times is not None and times < 1:
        raise ValueError("times must be None or at least 1")


@dataclass(eq=False)
class Rule:
    """One reply override."""

    verb: str
    text: str
    match: str | None
    remaining: int | None
    close: bool


class _Matching(Protocol):
    verb: str
    match: str | None
    remaining: int | None


_R = TypeVar("_R", bound=_Matching)


class RuleBook(Generic[_R]):
    """Rules (reply overrides, faults), checked newest first; a rule with a count is
    dropped when it is used up."""

    def __init__(self) -> None:
        self.rules: list[_R] = []

    def add(self, rule: _R) -> None:
        self.rules.append(rule)

    def clear(self) -> None:
        self.rules.clear()

    def has(self, verb: str) -> bool:
        return any(rule.verb == verb for rule in self.rules)

    def take(self, verb: str, arg: str) -> _R | None:
        """The newest rule for ``verb`` whose ``match`` occurs in ``arg``, counted as used."""
        for rule in reversed(self.rules):
            if rule.verb != verb:
                continue
            if rule.match is not None and rule.match.lower() not in arg.lower():
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining == 0:
                    self.rules.remove(rule)
            return rule
        return None
