"""A private Postfix + Dovecot (SASL only) instance on loopback, for integration tests.

Everything lives below one base folder: the Postfix configuration and queue, an
auth-only Dovecot, the TLS material and the Maildir that receives every message.
Nothing system-wide is changed: ``/etc/postfix/main.cf``, ``/etc/dovecot`` and the
system services are not used.

Listeners, all on 127.0.0.1 and on ports chosen at start-up:

* ``plain_port``: plain SMTP, STARTTLS offered, no AUTH; open relay for 127.0.0.0/8.
* ``submission_port``: STARTTLS required, then AUTH required to relay.
* ``smtps_port``: implicit TLS (TLS from the first byte), AUTH required to relay.

Every recipient in every domain is delivered by ``virtual(8)`` into one Maildir;
nothing ever leaves the machine.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from ._process import (
    HOST,
    free_loopback_ports,
    last_lines,
    spawn,
    tail_text,
    wait_for_greetings,
    wait_for_session_exit,
    wait_or_terminate,
)
from .maildir import MaildirMessage, clear_maildir, read_maildir
from .tls import LoopbackCertificates

logger = logging.getLogger(__name__)

#: Accounts known to Dovecot. One password is ASCII, the other is non-ASCII UTF-8.
DEFAULT_USERS: Mapping[str, str] = {
    "alice@example.test": "correct horse battery",
    "jose@example.test": "contraseña-ñü€",
}

#: Postfix's own default for ``smtpd_recipient_limit``.
DEFAULT_RECIPIENT_LIMIT = 1000
#: Postfix's own default for ``message_size_limit``.
DEFAULT_MESSAGE_SIZE_LIMIT = 10_240_000

_SEARCH_PATH = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
_QUEUE_NAMES = ("maildrop", "incoming", "active", "deferred", "hold")
# Queue folders: name, mode, group (owner is the mail owner, except for pid/).
_QUEUE_LAYOUT: tuple[tuple[str, int, str], ...] = (
    *(
        (name, 0o700, "root")
        for name in (
            "active",
            "bounce",
            "corrupt",
            "defer",
            "deferred",
            "flush",
            "hold",
            "incoming",
            "private",
            "saved",
            "trace",
        )
    ),
    ("maildrop", 0o730, "postdrop"),
    ("public", 0o710, "postdrop"),
    ("pid", 0o755, "root"),
)
_DEBCONF_PRESEED = "postfix postfix/main_mailer_type select No configuration\n"
_APT_PACKAGES = ("postfix", "dovecot-core")
_POLICY_RC_D = Path("/usr/sbin/policy-rc.d")


class PostfixFactory(Protocol):
    """Starts a PostfixInstance with the given constructor options (see conftest)."""

    def __call__(self, **options: Any) -> PostfixInstance: ...


def find_binary(name: str) -> str | None:
    """The full path of a system binary, also looking in the sbin folders."""
    found = shutil.which(name)
    if found is not None:
        return found
    for folder in _SEARCH_PATH:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


class DeliveredMessage(MaildirMessage):
    """One message file from the Maildir, exactly as Postfix stored it.

    Postfix stores messages with LF line endings and prepends ``Return-Path``,
    ``X-Original-To``, ``Delivered-To`` and ``Received`` headers.
    """

    newline = b"\n"


class PostfixInstance:
    """A private Postfix 3.x with an auth-only Dovecot, started and stopped on demand."""

    host: str = HOST

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        recipient_limit: int = DEFAULT_RECIPIENT_LIMIT,
        message_size_limit: int = DEFAULT_MESSAGE_SIZE_LIMIT,
        hostname: str = "mx.example.test",
        main_cf_overrides: Mapping[str, str] | None = None,
    ) -> None:
        self.users: dict[str, str] = dict(DEFAULT_USERS if users is None else users)
        for user, password in self.users.items():
            for text in (user, password):
                if any(character in text for character in ":\r\n\0"):
                    raise ValueError(f"a passwd-file entry cannot contain {text!r}")
        self.recipient_limit = recipient_limit
        self.message_size_limit = message_size_limit
        self.hostname = hostname
        self.main_cf_overrides: dict[str, str] = dict(main_cf_overrides or {})

        self._base_dir: Path | None = None
        self._certificates: LoopbackCertificates | None = None
        self._ports: tuple[int, ...] | None = None
        self._postfix: subprocess.Popen[bytes] | None = None
        self._postfix_master_pid: int | None = None
        self._dovecot: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    # ----------------------------------------------------------------- install

    @staticmethod
    def ensure_installed() -> None:
        """Make sure the ``postfix`` and ``dovecot`` binaries exist.

        When they are missing, we are root and ``apt-get`` exists, they are
        installed without prompts (and without starting any system service).
        Otherwise a RuntimeError says what to install.
        """
        missing = [name for name in ("postfix", "dovecot") if find_binary(name) is None]
        if not missing:
            return
        instruction = (
            "The Postfix/Dovecot integration tests need the postfix and dovecot binaries "
            f"(missing: {', '.join(missing)}). On Debian/Ubuntu run as root:\n"
            "  echo 'postfix postfix/main_mailer_type select No configuration' "
            "| debconf-set-selections\n"
            "  apt-get update\n"
            "  DEBIAN_FRONTEND=noninteractive apt-get install -y postfix dovecot-core"
        )
        apt_get = find_binary("apt-get")
        debconf = find_binary("debconf-set-selections")
        if os.geteuid() != 0 or apt_get is None or debconf is None:
            raise RuntimeError(instruction)

        environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        commands: list[tuple[list[str], bytes | None]] = [
            ([debconf], _DEBCONF_PRESEED.encode()),
            ([apt_get, "update"], None),
            ([apt_get, "install", "-y", "--no-install-recommends", *_APT_PACKAGES], None),
        ]
        with _services_not_started():
            for argv, stdin in commands:
                logger.warning("installing the test mail servers: %s", " ".join(argv))
                result = subprocess.run(
                    argv,
                    input=stdin if stdin is not None else b"",
                    capture_output=True,
                    env=environment,
                    check=False,
                    timeout=900,
                )
                if result.returncode != 0:
                    output = (result.stdout + result.stderr).decode(errors="replace")
                    raise RuntimeError(
                        f"{' '.join(argv)} failed with exit code {result.returncode}:\n"
                        f"{last_lines(output)}\n\n{instruction}"
                    )
        still_missing = [name for name in ("postfix", "dovecot") if find_binary(name) is None]
        if still_missing:
            raise RuntimeError(f"still missing after apt-get install: {still_missing}")

    # ------------------------------------------------------------- properties

    @property
    def base_dir(self) -> Path:
        if self._base_dir is None:
            raise RuntimeError("the Postfix instance has not been started")
        return self._base_dir

    @property
    def certificates(self) -> LoopbackCertificates:
        if self._certificates is None:
            raise RuntimeError("the Postfix instance has not been started")
        return self._certificates

    @property
    def ca_pem_path(self) -> Path:
        """PEM file of the CA that issued the servers' certificate."""
        return self.certificates.ca_pem

    def client_ssl_context(self) -> ssl.SSLContext:
        """A new client context that trusts the test CA (host names are checked)."""
        return self.certificates.client_context()

    def _port(self, index: int) -> int:
        if self._ports is None:
            raise RuntimeError("the Postfix instance has not been started")
        return self._ports[index]

    @property
    def plain_port(self) -> int:
        """Plain SMTP with STARTTLS offered, no AUTH, relaying for 127.0.0.0/8."""
        return self._port(0)

    @property
    def submission_port(self) -> int:
        """STARTTLS required, then AUTH required to relay."""
        return self._port(1)

    @property
    def smtps_port(self) -> int:
        """Implicit TLS, AUTH required to relay."""
        return self._port(2)

    @property
    def config_dir(self) -> Path:
        return self.base_dir / "postfix"

    @property
    def queue_dir(self) -> Path:
        return self.base_dir / "queue"

    @property
    def maildir(self) -> Path:
        """The one Maildir every message is delivered to."""
        return self.base_dir / "mail" / "inbox"

    @property
    def maillog_path(self) -> Path:
        return self.base_dir / "log" / "maillog"

    @property
    def dovecot_log_path(self) -> Path:
        return self.base_dir / "log" / "dovecot.log"

    @property
    def running(self) -> bool:
        return self._postfix is not None or self._dovecot is not None

    # ------------------------------------------------------------ start / stop

    def start(
        self,
        base_dir: Path,
        *,
        certificates: LoopbackCertificates | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Build the instance in ``base_dir`` and start it; return once every listener
        has answered with its greeting.

        ``base_dir`` should be a new, empty folder. ``certificates`` defaults to a new
        test CA and server certificate made in ``base_dir``. Raises RuntimeError (with
        the tail of the logs) if anything fails to start.
        """
        if self.running:
            raise RuntimeError("the Postfix instance is already running")
        for name in ("postfix", "dovecot"):
            if find_binary(name) is None:
                raise RuntimeError(
                    f"{name} is not installed; call PostfixInstance.ensure_installed() "
                    "or install the postfix and dovecot-core packages"
                )
        started = time.monotonic()
        self._base_dir = base_dir.resolve()
        self._base_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_folders()
        self._certificates = certificates or LoopbackCertificates.create(self.base_dir / "tls")
        # Ports are free when chosen but not reserved; a rare clash is retried.
        for attempt in range(3):
            self._ports = free_loopback_ports(3)
            self._write_configuration()
            try:
                self._start_dovecot(deadline=time.monotonic() + timeout)
                self._start_postfix(deadline=time.monotonic() + timeout)
            except BaseException as error:
                try:
                    self.stop()
                except RuntimeError as stop_error:
                    logger.error("cleaning up after a failed start: %s", stop_error)
                clash = isinstance(error, RuntimeError) and (
                    "Address already in use" in tail_text(self.maillog_path)
                )
                if clash and attempt < 2:
                    logger.warning("port clash while starting Postfix, retrying: %s", error)
                    _truncate(self.maillog_path)
                    continue
                raise
            break
        self.startup_seconds = time.monotonic() - started
        logger.info(
            "Postfix started in %.2f s: plain=%d submission=%d smtps=%d (base %s)",
            self.startup_seconds,
            self.plain_port,
            self.submission_port,
            self.smtps_port,
            self.base_dir,
        )

    def stop(self, *, timeout: float = 30.0) -> None:
        """Stop Postfix and Dovecot and wait until all their processes are gone.

        Safe to call more than once, and after a failed start.
        """
        errors: list[str] = []
        if self._postfix is not None:
            try:
                self._stop_postfix(timeout)
            except RuntimeError as error:
                errors.append(str(error))
        if self._dovecot is not None:
            try:
                self._stop_dovecot(timeout)
            except RuntimeError as error:
                errors.append(str(error))
        if errors:
            raise RuntimeError("; ".join(errors))

    def __enter__(self) -> PostfixInstance:
        if not self.running:
            raise RuntimeError("call start(base_dir) before using the instance as a context")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --------------------------------------------------------------- messages

    def messages(self) -> list[DeliveredMessage]:
        """The messages delivered so far, oldest first."""
        return read_maildir(DeliveredMessage, self.maildir, ("new", "cur"))

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[DeliveredMessage]:
        """Poll the Maildir until at least ``count`` messages are there, and return them.

        Delivery happens after the SMTP transaction is acknowledged, so a test that
        has just sent mail waits here. Raises AssertionError on timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages()
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"expected {count} delivered message(s) within {timeout} s, "
                    f"found {len(found)}\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def wait_for_message_containing(self, marker: bytes, timeout: float = 10.0) -> DeliveredMessage:
        """Poll the Maildir until a message containing ``marker`` arrives; return it."""
        deadline = time.monotonic() + timeout
        while True:
            for message in self.messages():
                if marker in message.data:
                    return message
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"no delivered message contains {marker!r} after {timeout} s\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def queue_is_empty(self) -> bool:
        """Whether no message is waiting in any Postfix queue."""
        for name in _QUEUE_NAMES:
            for _root, _dirs, files in os.walk(self.queue_dir / name):
                if files:
                    return False
        return True

    def wait_for_empty_queue(self, timeout: float = 10.0) -> None:
        """Poll until Postfix has delivered (or dropped) everything it accepted."""
        deadline = time.monotonic() + timeout
        while not self.queue_is_empty():
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"the Postfix queue did not drain within {timeout} s\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def clear(self, *, drain_timeout: float = 10.0) -> None:
        """Let in-flight deliveries finish, then delete every delivered message."""
        self.wait_for_empty_queue(drain_timeout)
        clear_maildir(self.maildir, ("new", "cur", "tmp"))

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the Postfix and Dovecot logs, for error messages."""
        parts = []
        for path in (self.maillog_path, self.dovecot_log_path):
            text = tail_text(path, lines) if self._base_dir is not None else ""
            parts.append(f"--- last lines of {path.name} ---\n{text or '(empty)'}")
        return "\n".join(parts)

    # ----------------------------------------------------------------- layout

    def _prepare_folders(self) -> None:
        base = self.base_dir
        # The Postfix daemons and virtual(8) run as unprivileged users: every folder
        # above the instance must let them through.
        _make_traversable(base)
        os.chmod(base, 0o701)
        postfix_user = pwd.getpwnam("postfix")
        nobody = pwd.getpwnam("nobody")
        for name in ("postfix", "log", "dovecot", "dovecot/run", "dovecot/state", "queue"):
            (base / name).mkdir(mode=0o755, exist_ok=True)
        # The queue folders as Postfix's installer would make them. Making them here
        # saves seconds of "postfix check" work, and lets Dovecot put its socket in
        # private/ before Postfix starts. Postfix still creates anything missing.
        postdrop = _group_id("postdrop")
        for name, mode, gid in _QUEUE_LAYOUT:
            folder = self.queue_dir / name
            folder.mkdir(exist_ok=True)
            if name != "pid":
                os.chown(folder, postfix_user.pw_uid, postdrop if gid == "postdrop" else 0)
            os.chmod(folder, mode)
        data = base / "data"
        data.mkdir(mode=0o700, exist_ok=True)
        os.chown(data, postfix_user.pw_uid, postfix_user.pw_gid)
        # The Maildir belongs to the user virtual(8) delivers as.
        mail = base / "mail"
        for folder in (
            mail,
            mail / "inbox",
            *(mail / "inbox" / sub for sub in ("tmp", "new", "cur")),
        ):
            folder.mkdir(mode=0o700, exist_ok=True)
            os.chown(folder, nobody.pw_uid, nobody.pw_gid)

    def _write_configuration(self) -> None:
        base = self.base_dir
        nobody = pwd.getpwnam("nobody")
        main_cf: dict[str, str] = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(base / "data"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "maillog_file": str(self.maillog_path),
            "maillog_file_prefixes": str(base),
            "myhostname": self.hostname,
            "mydomain": "example.test",
            "myorigin": "$myhostname",
            "inet_interfaces": HOST,
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            # Nothing is local, everything goes to the one Maildir.
            "mydestination": "",
            "relay_domains": "",
            "alias_maps": "",
            "alias_database": "",
            "local_transport": "error:5.1.1 local delivery is disabled",
            "default_transport": "virtual",
            "relay_transport": "virtual",
            "virtual_transport": "virtual",
            "virtual_mailbox_base": str(base / "mail"),
            "virtual_mailbox_maps": "static:inbox/",
            "virtual_uid_maps": f"static:{nobody.pw_uid}",
            "virtual_gid_maps": f"static:{nobody.pw_gid}",
            "virtual_mailbox_limit": "0",
            "smtp_dns_support_level": "disabled",
            "smtpd_peername_lookup": "no",
            "biff": "no",
            "append_dot_mydomain": "no",
            "delay_warning_time": "0",
            # Protocol behaviour the tests rely on.
            "smtpd_banner": "$myhostname ESMTP",
            "smtputf8_enable": "yes",
            "smtpd_forbid_bare_newline": "reject",
            "smtpd_forbid_bare_newline_exclusions": "",
            "local_header_rewrite_clients": "",
            "smtpd_recipient_limit": str(self.recipient_limit),
            "message_size_limit": str(self.message_size_limit),
            "smtpd_error_sleep_time": "0",
            # TLS and SASL (the listeners in master.cf turn them on or require them).
            "smtpd_tls_chain_files": str(self.certificates.server_chain_pem),
            "smtpd_tls_security_level": "may",
            "smtpd_tls_auth_only": "yes",
            "smtpd_sasl_type": "dovecot",
            "smtpd_sasl_path": "private/auth",
            "smtpd_sasl_auth_enable": "no",
            "smtp_tls_security_level": "none",
        }
        main_cf.update(self.main_cf_overrides)
        text = "# Private Postfix instance for the anyio_smtp integration tests.\n"
        text += "".join(f"{key} = {value}\n" for key, value in main_cf.items())
        (self.config_dir / "main.cf").write_text(text, encoding="utf-8")
        (self.config_dir / "master.cf").write_text(self._master_cf(), encoding="utf-8")
        # Postfix re-reads main.cf until its mtime is more than a second old (a guard
        # against half-written files): date the files back to start without waiting.
        past = time.time() - 60
        for name in ("main.cf", "master.cf"):
            os.utime(self.config_dir / name, (past, past))
        self._write_dovecot_configuration()

    def _master_cf(self) -> str:
        auth_required = (
            "  -o smtpd_sasl_auth_enable=yes\n"
            "  -o smtpd_tls_auth_only=yes\n"
            "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n"
        )
        # service type private unpriv chroot wakeup maxproc command
        return (
            "# Private Postfix instance for the anyio_smtp integration tests.\n"
            f"{HOST}:{self.plain_port} inet n - n - - smtpd\n"
            "  -o syslog_name=postfix/plain\n"
            "  -o smtpd_tls_security_level=may\n"
            f"{HOST}:{self.submission_port} inet n - n - - smtpd\n"
            "  -o syslog_name=postfix/submission\n"
            "  -o smtpd_tls_security_level=encrypt\n"
            f"{auth_required}"
            f"{HOST}:{self.smtps_port} inet n - n - - smtpd\n"
            "  -o syslog_name=postfix/smtps\n"
            "  -o smtpd_tls_wrappermode=yes\n"
            f"{auth_required}"
            "pickup unix n - n 60 1 pickup\n"
            "cleanup unix n - n - 0 cleanup\n"
            "qmgr unix n - n 300 1 qmgr\n"
            "tlsmgr unix - - n 1000? 1 tlsmgr\n"
            "rewrite unix - - n - - trivial-rewrite\n"
            "bounce unix - - n - 0 bounce\n"
            "defer unix - - n - 0 bounce\n"
            "trace unix - - n - 0 bounce\n"
            "verify unix - - n - 1 verify\n"
            "flush unix n - n 1000? 0 flush\n"
            "proxymap unix - - n - - proxymap\n"
            "proxywrite unix - - n - 1 proxymap\n"
            "showq unix n - n - - showq\n"
            "error unix - - n - - error\n"
            "retry unix - - n - - error\n"
            "discard unix - - n - - discard\n"
            "virtual unix - n n - - virtual\n"
            "anvil unix - - n - 1 anvil\n"
            "scache unix - - n - 1 scache\n"
            "postlog unix-dgram n - n - 1 postlogd\n"
        )

    def _write_dovecot_configuration(self) -> None:
        base = self.base_dir
        users_file = base / "dovecot" / "users"
        users_file.write_text(
            "".join(f"{user}:{{PLAIN}}{password}::::::\n" for user, password in self.users.items()),
            encoding="utf-8",
        )
        dovecot_group = _group_id("dovecot")
        os.chown(users_file, 0, dovecot_group)
        os.chmod(users_file, 0o640)
        config = f"""\
# Auth-only Dovecot for the anyio_smtp integration tests: it serves Postfix's SASL.
base_dir = {base / "dovecot" / "run"}
state_dir = {base / "dovecot" / "state"}
instance_name = anyio-smtp-tests
log_path = {self.dovecot_log_path}
protocols =
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login cram-md5 scram-sha-1 scram-sha-256
auth_verbose = yes
auth_failure_delay = 0
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {users_file}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={base / "mail"}
}}
# Failed logins from one IP are otherwise answered ever more slowly (up to 15 s):
# an auth process that cannot reach this listener applies no penalty.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service auth {{
  unix_listener {self.queue_dir / "private" / "auth"} {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"""
        (base / "dovecot" / "dovecot.conf").write_text(config, encoding="utf-8")

    # -------------------------------------------------------------- processes

    def _start_dovecot(self, deadline: float) -> None:
        dovecot = find_binary("dovecot")
        assert dovecot is not None
        config = self.base_dir / "dovecot" / "dovecot.conf"
        self._dovecot = spawn(
            [dovecot, "-F", "-c", str(config)], self.base_dir / "log" / "dovecot.out"
        )
        socket_path = self.queue_dir / "private" / "auth"
        while True:
            if self._dovecot.poll() is not None:
                raise RuntimeError(
                    f"dovecot exited with code {self._dovecot.returncode} during start-up\n"
                    f"{self._start_logs()}"
                )
            if _dovecot_auth_ready(socket_path):
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"dovecot's auth socket {socket_path} was not ready in time\n"
                    f"{self._start_logs()}"
                )
            time.sleep(0.02)

    def _start_postfix(self, deadline: float) -> None:
        postfix = find_binary("postfix")
        assert postfix is not None
        # start-fg keeps the master a child of our child (no daemonising), so the
        # instance is reaped by the processes we wait for.
        self._postfix = spawn(
            [postfix, "-c", str(self.config_dir), "start-fg"],
            self.base_dir / "log" / "postfix.out",
        )
        listeners = [
            (self.plain_port, None),
            (self.submission_port, None),
            (self.smtps_port, self.client_ssl_context()),
        ]
        wait_for_greetings("Postfix", self._postfix, listeners, deadline, self._start_logs)
        self._postfix_master_pid = _read_pid(self.queue_dir / "pid" / "master.pid")

    def _stop_postfix(self, timeout: float) -> None:
        process = self._postfix
        assert process is not None
        master_pid = self._postfix_master_pid
        if master_pid is None:
            with contextlib.suppress(OSError, ValueError):
                master_pid = _read_pid(self.queue_dir / "pid" / "master.pid")
        postfix = find_binary("postfix")
        problems: list[str] = []
        if process.poll() is None and postfix is not None:
            with open(self.base_dir / "log" / "postfix.out", "ab") as log:
                try:
                    subprocess.run(
                        [postfix, "-c", str(self.config_dir), "stop"],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        check=False,
                        timeout=timeout,
                    )
                except subprocess.TimeoutExpired:
                    problems.append(f"'postfix stop' took more than {timeout} s")
        problems += wait_or_terminate(process, timeout)
        self._postfix = None
        # The master made its own session; wait until every daemon in it has exited.
        if master_pid is not None:
            problems += wait_for_session_exit(master_pid, timeout)
        self._postfix_master_pid = None
        if problems:
            raise RuntimeError(f"Postfix did not stop cleanly: {problems}")

    def _stop_dovecot(self, timeout: float) -> None:
        process = self._dovecot
        assert process is not None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        problems = wait_or_terminate(process, timeout)
        self._dovecot = None
        # start_new_session made dovecot a session leader; wait for its children too.
        problems += wait_for_session_exit(process.pid, timeout)
        if problems:
            raise RuntimeError(f"Dovecot did not stop cleanly: {problems}")

    def _start_logs(self) -> str:
        parts = []
        problems = _first_problems(self.maillog_path) + _first_problems(self.dovecot_log_path)
        if problems:
            parts.append("--- first problems logged ---\n" + "\n".join(problems))
        parts.append(self.log_tail())
        for name in ("postfix.out", "dovecot.out"):
            path = self.base_dir / "log" / name
            parts.append(f"--- last lines of {name} ---\n{tail_text(path) or '(empty)'}")
        return "\n".join(parts)


# ------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _services_not_started() -> Iterator[None]:
    """Keep package scripts from starting the system-wide postfix/dovecot services.

    Debian's invoke-rc.d asks /usr/sbin/policy-rc.d; exit code 101 means "do not
    start". An existing policy is left alone; a temporary one is removed afterwards.
    """
    policy = _POLICY_RC_D
    if policy.exists():
        yield
        return
    policy.write_text("#!/bin/sh\n# Temporary: no service starts while installing.\nexit 101\n")
    try:
        policy.chmod(0o700)
        yield
    finally:
        policy.unlink()


def _dovecot_auth_ready(path: Path) -> bool:
    """Whether Dovecot's auth listener answers with its handshake (ending in DONE)."""
    if not path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(str(path))
            sock.sendall(f"VERSION\t1\t2\nCPID\t{os.getpid()}\n".encode())
            data = b""
            while b"\nDONE\n" not in b"\n" + data:
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                data += chunk
            return b"MECH\tPLAIN" in data
    except OSError:
        return False


def _read_pid(path: Path) -> int:
    return int(path.read_text(encoding="ascii").strip())


def _make_traversable(path: Path) -> None:
    """Give "others" search (x) permission on the folders above ``path``.

    Only folders we own are changed; read permission is never added.
    """
    for folder in path.parents:
        info = folder.stat()
        if info.st_mode & stat.S_IXOTH:
            continue
        if info.st_uid != os.geteuid():
            raise RuntimeError(
                f"{folder} is not searchable by other users (mode {oct(info.st_mode)}); "
                "the Postfix daemons need to reach folders below it"
            )
        logger.info("allowing other users to traverse %s", folder)
        os.chmod(folder, stat.S_IMODE(info.st_mode) | stat.S_IXOTH)


def _group_id(name: str) -> int:
    return grp.getgrnam(name).gr_gid


def _first_problems(path: Path, limit: int = 10) -> list[str]:
    """The first distinct fatal/panic/error/warning lines of a log."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    found: list[str] = []
    for line in text.splitlines():
        lowered = line.lower()
        if any(word in lowered for word in ("fatal", "panic", "error", "warning")):
            message = line.split("]: ", 1)[-1]
            if all(message not in seen for seen in found):
                found.append(line)
                if len(found) >= limit:
                    break
    return found


def _truncate(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.write_bytes(b"")
