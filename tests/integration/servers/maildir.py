"""Messages in a Maildir, as a private mail server (Postfix, Haraka) stored them."""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import os
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import ClassVar, TypeVar


@dataclass(frozen=True)
class MaildirMessage:
    """One message file of a Maildir, byte for byte.

    ``newline`` is the line ending the server stores messages with; a subclass per
    server sets it.
    """

    newline: ClassVar[bytes] = b"\r\n"

    path: Path
    data: bytes

    @property
    def headers(self) -> bytes:
        """The header block, without the blank line that ends it."""
        head, _, _ = self.data.partition(self.newline * 2)
        return head + self.newline

    @property
    def body(self) -> bytes:
        """Everything after the first blank line, byte for byte."""
        _, separator, body = self.data.partition(self.newline * 2)
        if not separator:
            raise ValueError(f"{self.path} has no blank line between header and body")
        return body

    def parsed(self) -> EmailMessage:
        """The message parsed with the standard library's modern e-mail policy."""
        parser = email.parser.BytesParser(policy=email.policy.default)
        message = parser.parsebytes(self.data)
        assert isinstance(message, EmailMessage)
        return message


M = TypeVar("M", bound=MaildirMessage)


def read_maildir(kind: type[M], maildir: Path, subfolders: Iterable[str]) -> list[M]:
    """The message files in ``subfolders`` of ``maildir``, oldest first."""
    files: list[tuple[int, str, Path]] = []
    for sub in subfolders:
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(maildir / sub):
                if entry.is_file(follow_symlinks=False):
                    files.append((entry.stat().st_mtime_ns, entry.name, Path(entry.path)))
    files.sort()
    result: list[M] = []
    for _, _, path in files:
        with contextlib.suppress(FileNotFoundError):
            result.append(kind(path=path, data=path.read_bytes()))
    return result


def clear_maildir(maildir: Path, subfolders: Iterable[str]) -> None:
    """Delete every message file in ``subfolders`` of ``maildir``."""
    for sub in subfolders:
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(maildir / sub):
                if entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
