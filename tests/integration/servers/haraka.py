"""A private Haraka (Node.js MTA) instance on loopback, for integration tests and benchmarks.

The instance is made with ``haraka -i`` in a folder of its own, configured, and run in
the foreground (``haraka -c``) with its output going to a log file; it is stopped by
its pid. Nothing leaves the machine and Haraka makes no DNS query:

* ``loopback_maildir.js`` (next to this module) answers the reverse-DNS hook itself and
  takes both queue hooks, so every accepted message, whether the session was
  authenticated (Haraka's "outbound" path) or not, is written to one Maildir-style
  folder, one file per message;
* the plugin list has no DNS-using plugins, ``public_ip`` is set (no STUN query) and
  ``nodes=0`` (no cluster workers).

Listeners, on 127.0.0.1 and on ports chosen at start-up:

* ``port``: plain SMTP, STARTTLS offered (``tls`` plugin), AUTH PLAIN/LOGIN
  (``auth/flat_file``); PIPELINING is Haraka's own. Recipients are accepted only
  once the session is authenticated, unless ``accept_unauthenticated`` is set.
  ``auth/flat_file`` offers AUTH on a plaintext session too, because a loopback client
  counts as a private network for it (elsewhere it waits for TLS).
* ``smtps_port`` (if ``implicit_tls``): the same with TLS from the first byte.

With ``tls=False`` (the benchmark's set-up) there is only the plain port: no STARTTLS,
no AUTH, no certificates (so no test dependencies either); pair it with
``accept_unauthenticated=True``.

Where Haraka is installed: ``$ANYIO_SMTP_HARAKA`` (the ``node_modules/haraka`` folder),
else ``.ci/cache/haraka/node_modules/haraka`` in the repository, where ``.ci/run``
installs it (``npm install --omit=dev --ignore-scripts haraka@3.3.4``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

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

#: The Haraka release the tests are written against.
HARAKA_VERSION = "3.3.4"

#: Haraka 3.3.4 declares ``"engines": {"node": ">=20"}``.
MINIMUM_NODE = (20,)

#: Names the ``node_modules/haraka`` folder of a Haraka installation.
ENVIRONMENT_VARIABLE = "ANYIO_SMTP_HARAKA"

_REPOSITORY = Path(__file__).resolve().parents[3]
#: Where ``.ci/run`` installs Haraka.
DEFAULT_INSTALL_DIR = _REPOSITORY / ".ci" / "cache" / "haraka"
DEFAULT_LOCATION = DEFAULT_INSTALL_DIR / "node_modules" / "haraka"

_STATIC = Path(__file__).with_name("haraka")
_PLUGIN = "loopback_maildir"

#: Accounts of ``auth/flat_file``.
DEFAULT_USERS: Mapping[str, str] = {
    "alice@example.test": "correct horse battery",
}

INSTALL_INSTRUCTIONS = (
    f"Haraka {HARAKA_VERSION} is needed by these tests. Install it once with\n"
    "  bash .ci/install-haraka  (installs Node.js 20 if missing, then Haraka), or by hand:\n"
    "  apt-get install nodejs npm\n"
    f"  mkdir -p {DEFAULT_INSTALL_DIR} && cd {DEFAULT_INSTALL_DIR} && "
    f"npm install --omit=dev --ignore-scripts haraka@{HARAKA_VERSION}\n"
    f"or point {ENVIRONMENT_VARIABLE} at an existing node_modules/haraka folder."
)


@dataclass(frozen=True)
class HarakaInstallation:
    """The ``node`` binary and the ``node_modules/haraka`` folder to run."""

    node: Path
    package: Path
    version: str

    @property
    def haraka_bin(self) -> Path:
        return self.package / "bin" / "haraka"


#: Installs Node.js (when missing) and Haraka into ``DEFAULT_INSTALL_DIR``.
INSTALLER = _REPOSITORY / ".ci" / "install-haraka"


def ensure_installed() -> None:
    """Install Haraka at the default location when it is not there yet.

    As the Postfix fixture does with ``apt-get``: the test command works on a
    fresh machine.  Nothing happens when ``$ANYIO_SMTP_HARAKA`` names an
    installation, or when the right version is in place.
    """
    if os.environ.get(ENVIRONMENT_VARIABLE) or _installed_version(DEFAULT_LOCATION) == (
        HARAKA_VERSION
    ):
        return
    bash = shutil.which("bash")
    if bash is None:
        raise RuntimeError(f"bash is needed to install Haraka.\n{INSTALL_INSTRUCTIONS}")
    logger.warning("installing the Haraka test peer: bash %s", INSTALLER)
    result = subprocess.run([bash, str(INSTALLER)], capture_output=True, check=False, timeout=900)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace")
        raise RuntimeError(
            f"{INSTALLER} failed with exit code {result.returncode}:\n"
            f"{last_lines(output)}\n\n{INSTALL_INSTRUCTIONS}"
        )


def _installed_version(package: Path) -> str | None:
    try:
        return str(json.loads((package / "package.json").read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError):
        return None


def find_haraka() -> HarakaInstallation:
    """Locate node and Haraka (see the module docstring); RuntimeError says how to
    install what is missing."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError(f"node (Node.js) is not on PATH.\n{INSTALL_INSTRUCTIONS}")
    configured = os.environ.get(ENVIRONMENT_VARIABLE)
    package = Path(configured) if configured else DEFAULT_LOCATION
    where = f"{ENVIRONMENT_VARIABLE}={configured}" if configured else "the default location"
    manifest = package / "package.json"
    try:
        version = str(json.loads(manifest.read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError) as error:
        raise RuntimeError(
            f"no Haraka installation at {package} ({where}): {error}\n{INSTALL_INSTRUCTIONS}"
        ) from None
    if version != HARAKA_VERSION:
        raise RuntimeError(
            f"{package} holds Haraka {version}, not {HARAKA_VERSION}.\n{INSTALL_INSTRUCTIONS}"
        )
    installation = HarakaInstallation(node=Path(node), package=package.resolve(), version=version)
    if not installation.haraka_bin.is_file():
        raise RuntimeError(f"{installation.haraka_bin} is missing.\n{INSTALL_INSTRUCTIONS}")
    node_version = _node_version(node)
    if node_version < MINIMUM_NODE:
        raise RuntimeError(
            f"{node} is Node.js {'.'.join(map(str, node_version))}; Haraka {HARAKA_VERSION} "
            f"needs {MINIMUM_NODE[0]} or later (Debian 12's own nodejs is 18: .ci/run "
            "installs Node.js 20 from NodeSource then)."
        )
    return installation


def _node_version(node: str) -> tuple[int, ...]:
    result = subprocess.run(
        [node, "--version"], stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=30
    )
    text = result.stdout.decode(errors="replace").strip().lstrip("v")
    try:
        return tuple(int(part) for part in text.split("."))
    except ValueError:
        raise RuntimeError(f"{node} --version printed {text!r}\n{INSTALL_INSTRUCTIONS}") from None


class StoredMessage(MaildirMessage):
    """One message file of the Maildir: two envelope lines written by the plugin
    (``Return-Path``, ``X-Envelope-To``), then the message as Haraka queued it (CRLF
    line endings, dot-unstuffed, Haraka's ``Received`` header on top)."""

    newline = b"\r\n"

    @property
    def envelope_recipients(self) -> tuple[str, ...]:
        value = self.parsed()["X-Envelope-To"]
        return tuple(part.strip() for part in str(value or "").split(","))


class HarakaInstance:
    """A private Haraka, configured for loopback only, started and stopped on demand."""

    host: str = HOST

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        tls: bool = True,
        accept_unauthenticated: bool = False,
        implicit_tls: bool = True,
        hostname: str = "haraka.example.test",
        log_level: str = "info",
    ) -> None:
        self.users: dict[str, str] = dict(DEFAULT_USERS if users is None else users)
        for user, password in self.users.items():
            for text in (user, password):
                if any(character in text for character in "=;[]\r\n\0") or text != text.strip():
                    raise ValueError(f"an auth_flat_file.ini entry cannot hold {text!r}")
        self.tls = tls
        self.accept_unauthenticated = accept_unauthenticated
        self.implicit_tls = tls and implicit_tls
        self.hostname = hostname
        self.log_level = log_level

        self._installation: HarakaInstallation | None = None
        self._base_dir: Path | None = None
        self._certificates: LoopbackCertificates | None = None
        self._ports: tuple[int, ...] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    # ------------------------------------------------------------- properties

    @property
    def base_dir(self) -> Path:
        if self._base_dir is None:
            raise RuntimeError("the Haraka instance has not been started")
        return self._base_dir

    @property
    def instance_dir(self) -> Path:
        """The folder made by ``haraka -i`` (``config/``, ``plugins/``, ``queue/``)."""
        return self.base_dir / "haraka"

    @property
    def config_dir(self) -> Path:
        return self.instance_dir / "config"

    @property
    def maildir(self) -> Path:
        """The one Maildir-style folder every accepted message is written to."""
        return self.base_dir / "maildir"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "haraka.log"

    @property
    def pid_path(self) -> Path:
        """Holds the pid while Haraka runs, so that a leftover can be found and stopped."""
        return self.base_dir / "haraka.pid"

    @property
    def certificates(self) -> LoopbackCertificates:
        if self._certificates is None:
            raise RuntimeError("the Haraka instance has not been started")
        return self._certificates

    def client_ssl_context(self) -> ssl.SSLContext:
        """A new client context that trusts the test CA (host names are checked)."""
        return self.certificates.client_context()

    @property
    def port(self) -> int:
        """Plain SMTP with STARTTLS and AUTH offered."""
        if self._ports is None:
            raise RuntimeError("the Haraka instance has not been started")
        return self._ports[0]

    @property
    def smtps_port(self) -> int:
        """Implicit TLS (only with ``implicit_tls=True``)."""
        if self._ports is None:
            raise RuntimeError("the Haraka instance has not been started")
        if not self.implicit_tls:
            raise RuntimeError("this Haraka instance has no implicit-TLS listener")
        return self._ports[1]

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None

    # ------------------------------------------------------------ start / stop

    def start(
        self,
        base_dir: Path,
        *,
        certificates: LoopbackCertificates | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Make the instance in ``base_dir`` (a new, empty folder), start it and return
        once every listener has sent its 220 greeting.

        Raises RuntimeError, with the tail of Haraka's log, if it does not start.
        """
        if self.running:
            raise RuntimeError("the Haraka instance is already running")
        started = time.monotonic()
        self._installation = find_haraka()
        self._base_dir = base_dir.resolve()
        self._base_dir.mkdir(parents=True, exist_ok=True)
        if self.tls:
            self._certificates = certificates or LoopbackCertificates.create(self.base_dir / "tls")
        self._install()
        # Ports are free when chosen but not reserved; a rare clash is retried.
        for attempt in range(3):
            self._ports = free_loopback_ports(2)
            self._write_configuration()
            try:
                self._run(deadline=time.monotonic() + timeout)
            except BaseException as error:
                clash = isinstance(error, RuntimeError) and "EADDRINUSE" in tail_text(self.log_path)
                try:
                    self.stop()
                except RuntimeError as stop_error:
                    logger.error("cleaning up after a failed start: %s", stop_error)
                if clash and attempt < 2:
                    logger.warning("port clash while starting Haraka, retrying: %s", error)
                    continue
                raise
            break
        self.startup_seconds = time.monotonic() - started
        logger.info(
            "Haraka started in %.2f s on %s:%d (base %s)",
            self.startup_seconds,
            HOST,
            self.port,
            self.base_dir,
        )

    def stop(self, *, timeout: float = 30.0) -> None:
        """Stop Haraka (TERM to its pid) and wait until its processes are gone.

        Safe to call more than once, and after a failed start.
        """
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        problems = wait_or_terminate(process, timeout)
        self._process = None
        # start_new_session made Haraka a session leader: wait for anything it started.
        problems += wait_for_session_exit(process.pid, timeout)
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()
        if problems:
            raise RuntimeError(f"Haraka did not stop cleanly: {problems}")

    def __enter__(self) -> HarakaInstance:
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

    def messages(self) -> list[StoredMessage]:
        """The messages stored so far (only complete ones: they are renamed into new/)."""
        return read_maildir(StoredMessage, self.maildir, ("new",))

    def messages_containing(self, marker: bytes) -> list[StoredMessage]:
        return [message for message in self.messages() if marker in message.data]

    def clear(self) -> None:
        """Delete every stored message."""
        clear_maildir(self.maildir, ("new", "cur"))

    def leaks(self) -> list[str]:
        """Log lines showing a DNS query or outbound delivery (there must be none).

        The startup scan of Haraka's (empty) outbound queue is not a leak.
        """
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return [f"cannot read {self.log_path}"]
        return [line for line in text.splitlines() if _is_leak(line)]

    def log_tail(self, lines: int = 40) -> str:
        text = tail_text(self.log_path, lines) if self._base_dir is not None else ""
        return f"--- last lines of {self.log_path.name} ---\n{text or '(empty)'}"

    # ----------------------------------------------------------------- set-up

    def _install(self) -> None:
        """``haraka -i``: the instance skeleton with Haraka's default configuration."""
        installation = self._installation
        assert installation is not None
        result = subprocess.run(
            [str(installation.node), str(installation.haraka_bin), "-i", str(self.instance_dir)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
            timeout=60,
        )
        if result.returncode != 0 or not (self.config_dir / "smtp.ini").is_file():
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise RuntimeError(
                f"haraka -i {self.instance_dir} failed ({result.returncode}):\n{output}"
            )
        shutil.copyfile(_STATIC / f"{_PLUGIN}.js", self.instance_dir / "plugins" / f"{_PLUGIN}.js")
        for sub in ("tmp", "new", "cur"):
            (self.maildir / sub).mkdir(parents=True, exist_ok=True)

    def _write_configuration(self) -> None:
        """Replace every configuration file Haraka would otherwise read with defaults
        that reach out (the plugin list, smtp.ini) and add ours."""
        ports = self._ports
        assert ports is not None
        config = self.config_dir
        listen = [f"{HOST}:{ports[0]}"]
        smtp_ini = [
            f"listen={','.join(listen + ([f'{HOST}:{ports[1]}'] if self.implicit_tls else []))}",
            # No other port may be taken for implicit TLS by accident (the default is 465).
            f"smtps_port={ports[1]}",
            # Known here, so Haraka does not ask a STUN server for its public address.
            f"public_ip={HOST}",
            # No cluster: one process, the one we started.
            "nodes=0",
            "force_shutdown_timeout=5",
            "inactivity_timeout=60",
        ]
        files: dict[str, str] = {
            "smtp.ini": "\n".join(smtp_ini) + "\n",
            # Our plugin first: it answers lookup_rdns and takes the queue hooks.
            "plugins": f"{_PLUGIN}\n" + ("tls\nauth/flat_file\n" if self.tls else ""),
            "me": f"{self.hostname}\n",
            "log.ini": f"[main]\nlevel={self.log_level}\ntimestamps=true\nformat=default\n",
            # A connection.ini replaces Haraka's defaults entirely: every section it
            # reads must be here ([uuid] and [message] above all).
            "connection.ini": (
                "[main]\nsmtputf8=true\nstrict_rfc1869=false\n\n"
                "[haproxy]\nhosts[] =\n\n"
                "[headers]\nadd_received=true\nshow_version=true\nmax_lines=1000\n"
                "max_received=100\n\n"
                "[max]\nbytes=26214400\nmime_parts=1000\nline_length=512\n"
                "data_line_length=992\n\n"
                f"[message]\nhelo={self.hostname} at your service.\n"
                "close=closing connection.\n\n"
                "[uuid]\nbanner_chars=6\ndeny_chars=0\n"
            ),
            "tls.ini": "[main]\nkey=tls_key.pem\ncert=tls_cert.pem\ndhparam=dhparams.pem\n",
            "auth_flat_file.ini": (
                "[core]\nmethods=PLAIN,LOGIN\n\n[users]\n"
                + "".join(f"{user}={password}\n" for user, password in self.users.items())
            ),
            f"{_PLUGIN}.ini": (
                f"[main]\nmaildir={self.maildir}\n"
                f"accept_unauthenticated={'true' if self.accept_unauthenticated else 'false'}\n"
            ),
        }
        for name, text in files.items():
            (config / name).write_text(text, encoding="utf-8")
        if not self.tls:
            return
        shutil.copyfile(self.certificates.server_key_pem, config / "tls_key.pem")
        shutil.copyfile(self.certificates.server_cert_pem, config / "tls_cert.pem")
        # Fixed public DH parameters: Haraka would otherwise run "openssl dhparam".
        shutil.copyfile(_STATIC / "ffdhe2048.pem", config / "dhparams.pem")
        os.chmod(config / "tls_key.pem", 0o600)

    def _run(self, deadline: float) -> None:
        installation = self._installation
        assert installation is not None
        self.log_path.write_bytes(b"")
        self._process = spawn(
            [str(installation.node), str(installation.haraka_bin), "-c", str(self.instance_dir)],
            self.log_path,
        )
        self.pid_path.write_text(f"{self._process.pid}\n", encoding="ascii")
        listeners: list[tuple[int, ssl.SSLContext | None]] = [(self.port, None)]
        if self.implicit_tls:
            listeners.append((self.smtps_port, self.client_ssl_context()))
        wait_for_greetings("Haraka", self._process, listeners, deadline, self.log_tail)


def _is_leak(line: str) -> bool:
    """Whether a line of Haraka's log shows a DNS query or outbound delivery."""
    if "[outbound/queue]" in line:
        return not any(harmless in line for harmless in ("Loading", "files in my"))
    if "[outbound" in line:
        return True
    if any(word in line for word in ("DNSERROR", "NXDOMAIN", "get_mx", "STUN", "stun")):
        return True
    # Our plugin answers the reverse-DNS hook with "localhost" for every client.
    return " disconnect ip=" in line and " rdns=localhost " not in line
