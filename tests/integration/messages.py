"""Numbered test messages: many per run, each found again in a server's Maildir by its
marker (the run and its index), which is also its ``Subject``."""

from __future__ import annotations


def marker_of(run: str, index: int) -> str:
    return f"{run}-{index:03d}"


def numbered_message(
    body_template: str, sender: str, recipient: str, run: str, index: int, *, stored_newline: str
) -> tuple[bytes, bytes]:
    """The message as sent (CRLF header), and its body as the server stores it.

    ``body_template`` is formatted with ``index``, ``run`` and ``marker``; in the stored
    body every line ends with ``stored_newline`` (a bare LF in the template too).
    """
    mark = marker_of(run, index)
    body = body_template.format(index=index, run=run, marker=mark)
    headers = (
        f"From: {sender}\r\nTo: {recipient}\r\nSubject: {mark}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    )
    stored = body.replace("\r\n", "\n").replace("\n", stored_newline)
    return (headers + body).encode(), stored.encode()
