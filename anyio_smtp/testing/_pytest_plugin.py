"""pytest fixtures for code that sends mail: a running SMTP test server, throw-away TLS.

Installing ``anyio_smtp`` registers this module as the pytest plugin ``anyio_smtp`` (the
``pytest11`` entry point; ``-p no:anyio_smtp`` turns it off, ``-p anyio_smtp`` loads it
where plugin autoloading is disabled). It provides three fixtures and one marker:

``smtp_server``
    A started :class:`~anyio_smtp.testing.SMTPTestServer` on 127.0.0.1, running in the
    test's event loop until the test ends. Its options are the keyword arguments of
    ``@pytest.mark.smtp_server(...)`` (on the test, its class or its module; the closest
    wins for each keyword) or of an indirect parametrisation
    (``@pytest.mark.parametrize("smtp_server", [{...}], indirect=True)``): those of
    :class:`~anyio_smtp.testing.SMTPTestServer`, plus ``starttls=True`` / ``tls=True``
    for STARTTLS / implicit TLS with the certificate of ``smtp_tls``.
``smtp_server_factory``
    A :class:`SMTPServerFactory`, for more than one server in a test or options decided
    in the test: ``await smtp_server_factory(users={...})``.
``smtp_tls``
    A :class:`~anyio_smtp.testing.ThrowawayCA` for ``localhost`` and ``127.0.0.1``,
    with its CA certificate written to a file (``smtp_tls.ca_pem_path``). Needs
    ``trustme``.

The server fixtures are async fixtures: anyio's pytest plugin runs them, in the event
loop of the test, on the test's ``anyio_backend``. They serve async tests only
(``@pytest.mark.anyio``). Nothing here is imported or run unless a test asks for one of
the fixtures.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from anyio.abc import TaskGroup, TaskStatus

    from ._server import SMTPTestServer
    from ._tls import ThrowawayCA

__all__ = ("SMTPServerFactory",)

MARKER = "smtp_server"
#: The factory's own options, besides those of SMTPTestServer.
_SHORTCUTS = ("starttls", "tls")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**options): the options of the smtp_server fixture: the keyword "
        "arguments of anyio_smtp.testing.SMTPTestServer, and starttls=True or tls=True "
        "to use the certificate of the smtp_tls fixture",
    )


class SMTPServerFactory:
    """Starts SMTP test servers that run until the end of the test.

    The value of the ``smtp_server_factory`` fixture. Each server runs in a task of the
    fixture, in the test's event loop; when the test ends, every server it started is
    stopped.

    :param task_group: where the servers run
    :param tls: returns the certificates for ``starttls=True`` and ``tls=True``
    """

    def __init__(self, task_group: TaskGroup, tls: Callable[[], ThrowawayCA]) -> None:
        self._task_group = task_group
        self._tls = tls
        #: The servers started so far, in order.
        self.servers: list[SMTPTestServer] = []

    def __repr__(self) -> str:
        return f"<SMTPServerFactory, {len(self.servers)} server(s) started>"

    async def __call__(
        self, *, starttls: bool = False, tls: bool = False, **options: Any
    ) -> SMTPTestServer:
        """Make a server and start it.

        :param starttls: offer ``STARTTLS`` with the certificate of the ``smtp_tls``
            fixture (as ``starttls_context=smtp_tls.server_context``)
        :param tls: implicit TLS with that certificate (as
            ``tls_context=smtp_tls.server_context``)
        :param options: keyword arguments of
            :class:`~anyio_smtp.testing.SMTPTestServer`
        :return: the started server: :attr:`~anyio_smtp.testing.SMTPTestServer.port`
            is set
        :raises TypeError: for an option that the server does not take, or a context
            given twice
        """
        for flag, name, option in (
            (starttls, "starttls", "starttls_context"),
            (tls, "tls", "tls_context"),
        ):
            if flag:
                if options.get(option) is not None:
                    raise TypeError(f"{option} given together with {name}=True")
                options[option] = self._tls().server_context
        from ._server import SMTPTestServer

        return await self.start(SMTPTestServer(**options))

    async def start(self, server: SMTPTestServer) -> SMTPTestServer:
        """Start a server made by the caller; it runs until the end of the test.

        :param server: a server that is not running
        :return: ``server``, started
        """
        started: SMTPTestServer = await self._task_group.start(_run, server)
        self.servers.append(started)
        return started


async def _run(server: SMTPTestServer, *, task_status: TaskStatus[SMTPTestServer]) -> None:
    import anyio

    async with server:
        task_status.started(server)
        await anyio.sleep_forever()


def _require_async_test(request: pytest.FixtureRequest) -> None:
    function = getattr(request.node, "obj", None)
    inner = getattr(getattr(function, "hypothesis", None), "inner_test", function)
    if isinstance(request.node, pytest.Function) and not inspect.iscoroutinefunction(inner):
        pytest.fail(
            f"{request.node.nodeid}: the SMTP server fixtures run in the test's event loop, "
            "so they serve async tests only (async def, marked @pytest.mark.anyio)",
            pytrace=False,
        )


@pytest.fixture
async def smtp_server_factory(
    anyio_backend: object, request: pytest.FixtureRequest
) -> AsyncIterator[SMTPServerFactory]:
    """Start SMTP test servers in the test: ``await smtp_server_factory(**options)``."""
    _require_async_test(request)
    import anyio

    def tls() -> ThrowawayCA:
        value: ThrowawayCA = request.getfixturevalue("smtp_tls")
        return value

    async with anyio.create_task_group() as task_group:
        yield SMTPServerFactory(task_group, tls)
        task_group.cancel_scope.cancel()


@pytest.fixture
async def smtp_server(
    smtp_server_factory: SMTPServerFactory, request: pytest.FixtureRequest
) -> SMTPTestServer:
    """A started SMTP test server, configured by ``@pytest.mark.smtp_server(...)``."""
    options: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers(MARKER))):
        if marker.args:
            pytest.fail(
                f"@pytest.mark.{MARKER} takes keyword arguments only, not {marker.args!r}",
                pytrace=False,
            )
        options.update(marker.kwargs)
    param = getattr(request, "param", None)
    if param is not None:
        if not isinstance(param, dict):
            pytest.fail(
                f"an indirect parameter of {MARKER} is a dict of options, not {param!r}",
                pytrace=False,
            )
        options.update(param)
    from ._server import SMTPTestServer

    known = set(inspect.signature(SMTPTestServer).parameters) | set(_SHORTCUTS)
    unknown = sorted(set(options) - known)
    if unknown:
        pytest.fail(
            f"unknown option(s) of the {MARKER} fixture: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(known))})",
            pytrace=False,
        )
    return await smtp_server_factory(**options)


@pytest.fixture
def smtp_tls(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayCA:
    """A throw-away CA, its contexts, and its certificate in a PEM file (``ca_pem_path``)."""
    from ._tls import ThrowawayCA

    try:
        ca = ThrowawayCA()
    except ImportError as exc:
        pytest.fail(f"the smtp_tls fixture: {exc}", pytrace=False)
    ca.write_ca_pem(tmp_path_factory.mktemp("smtp_tls") / "ca.pem")
    return ca
