"""The service extensions a server advertised in its EHLO reply.

RFC 5321 §4.1.1.1: ``ehlo-ok-rsp = ( "250" SP Domain [ SP ehlo-greet ] CRLF ) /
( "250-" Domain [ SP ehlo-greet ] CRLF *( "250-" ehlo-line CRLF ) "250" SP
ehlo-line CRLF )`` and ``ehlo-line = ehlo-keyword *( SP ehlo-param )``.
Keywords are case-insensitive.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

__all__ = ("Capabilities",)


class Capabilities(Mapping[str, tuple[str, ...]]):
    """The EHLO keywords of a server and their parameters; immutable.

    Keys are upper-case keywords and lookups ignore case, so
    ``"pipelining" in caps`` and ``caps["SIZE"] == ("35882577",)`` both work.
    Several ``AUTH`` lines, and the legacy ``AUTH=LOGIN PLAIN`` form, are merged.

    >>> caps = Capabilities.from_ehlo(["mx.example greets you", "SIZE 1000", "auth PLAIN login"])
    >>> "Pipelining" in caps, caps.size_limit, sorted(caps.auth_mechanisms)
    (False, 1000, ['LOGIN', 'PLAIN'])
    """

    __slots__ = ("_greeting", "_items")

    def __init__(self, items: Mapping[str, tuple[str, ...]] | None = None, greeting: str = ""):
        self._items: dict[str, tuple[str, ...]] = {
            key.upper(): tuple(value) for key, value in (items or {}).items()
        }
        self._greeting = greeting

    @classmethod
    def from_ehlo(cls, lines: Iterable[str]) -> Capabilities:
        """Build from the text lines of a 250 reply to EHLO (the first line is the greeting)."""
        iterator = iter(lines)
        greeting = next(iterator, "")
        items: dict[str, tuple[str, ...]] = {}
        for line in iterator:
            words = line.split()
            if not words:
                continue  # some servers end with an empty "250 " line
            keyword, params = words[0].upper(), tuple(words[1:])
            if keyword.startswith("AUTH="):
                # Pre-RFC 4954 servers wrote "AUTH=LOGIN PLAIN".
                params = (keyword[5:], *params) if keyword[5:] else params
                keyword = "AUTH"
            if keyword == "AUTH":
                merged = items.get("AUTH", ()) + tuple(p.upper() for p in params)
                params = tuple(dict.fromkeys(merged))
            items[keyword] = params
        return cls(items, greeting)

    @property
    def greeting(self) -> str:
        """The first line of the EHLO reply (the server's domain and greeting)."""
        return self._greeting

    def __getitem__(self, keyword: str) -> tuple[str, ...]:
        return self._items[keyword.upper()]

    def __contains__(self, keyword: object) -> bool:
        return isinstance(keyword, str) and keyword.upper() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        shown = ", ".join(
            " ".join((key, *value)) if value else key for key, value in self._items.items()
        )
        return f"Capabilities({shown})"

    @property
    def auth_mechanisms(self) -> frozenset[str]:
        """The SASL mechanisms offered with ``AUTH``, upper-case."""
        return frozenset(self._items.get("AUTH", ()))

    @property
    def limits(self) -> dict[str, int]:
        """The server's LIMITS (RFC 9422), e.g. ``{"RCPTMAX": 100, "MAILMAX": 1000}``.

        Only well-formed positive numbers are kept; unknown limits are kept too.
        """
        limits: dict[str, int] = {}
        for param in self._items.get("LIMITS", ()):
            name, _, value = param.partition("=")
            if value.isascii() and value.isdigit() and int(value) > 0:
                limits[name.upper()] = int(value)
        return limits

    @property
    def size_limit(self) -> int | None:
        """The largest message the server accepts (RFC 1870), or None for no fixed limit.

        ``SIZE`` without a number, or ``SIZE 0``, means the server announced no
        fixed limit.
        """
        params = self._items.get("SIZE")
        if not params or not (params[0].isascii() and params[0].isdigit()):
            return None
        limit = int(params[0])
        return limit or None
