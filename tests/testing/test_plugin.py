"""The pytest plugin of anyio_smtp.testing: its fixtures, used as an application would.

Most checks write a small project into a pytester folder and run pytest on it in a
subprocess (the fixtures need an event loop of their own), once per anyio backend. The
async tests at the end use the fixtures in this suite itself, next to its own
``anyio_backend`` fixture.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

import anyio_smtp
import anyio_smtp.testing._pytest_plugin as plugin
from anyio_smtp.testing import SMTPServerFactory, SMTPTestServer, ThrowawayCA

pytest_plugins = ["pytester"]

BACKENDS = ("asyncio", "trio")
TIMEOUT = 120

#: The generated projects' settings: what this suite holds itself to.
INI = """\
[pytest]
addopts = -p no:cacheprovider --strict-markers
filterwarnings =
    error::ResourceWarning
    error::pytest.PytestUnraisableExceptionWarning
"""

CONFTEST = """\
import asyncio

import pytest


@pytest.fixture
def anyio_backend():
    return BACKEND


@pytest.fixture
def running_backend():
    def which():
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            import trio

            trio.lowlevel.current_task()
            return "trio"
        return "asyncio"

    return which
"""

#: An application's tests: every way of configuring and using the fixtures.
APP_TESTS = """\
import ssl

import anyio
import pytest

import anyio_smtp
from anyio_smtp.testing import SMTPTestServer

pytestmark = [pytest.mark.anyio, pytest.mark.smtp_server(hostname="mx.app.test")]

MESSAGE = b"Subject: hello\\r\\n\\r\\nHello!\\r\\n"
#: The addresses of the servers of test_two_servers.
STOPPED = []


async def test_a_plain_send(smtp_server, running_backend):
    assert running_backend() == BACKEND
    assert smtp_server.hostname == "mx.app.test"
    async with anyio_smtp.connect(smtp_server.host, smtp_server.port) as smtp:
        await smtp.send_mail("app@example.com", ["ada@example.org"], MESSAGE)
    (message,) = smtp_server.messages
    assert message.sender == "app@example.com"
    assert message.recipients == ("ada@example.org",)
    assert message.data == MESSAGE
    assert not message.tls


async def test_a_chosen_reply(smtp_server):
    smtp_server.reply("RCPT", "550 5.1.1 No such user", match="nobody")
    async with anyio_smtp.connect(smtp_server.host, smtp_server.port) as smtp:
        with pytest.raises(anyio_smtp.RecipientsRefusedError):
            await smtp.send_mail("app@example.com", ["nobody@example.org"], MESSAGE)
        await smtp.send_mail("app@example.com", ["ada@example.org"], MESSAGE)
    assert [m.recipients for m in smtp_server.messages] == [("ada@example.org",)]


@pytest.mark.smtp_server(starttls=True, users={"app": "secret"}, require_auth=True)
async def test_starttls_and_login(smtp_server, smtp_tls):
    assert smtp_server.hostname == "mx.app.test"
    async with anyio_smtp.connect_starttls(
        smtp_server.host, smtp_server.port, ssl_context=smtp_tls.client_context
    ) as smtp:
        await smtp.login("app", "secret")
        await smtp.send_mail("app@example.com", ["ada@example.org"], MESSAGE)
    (message,) = smtp_server.messages
    assert message.tls
    assert message.authenticated_as == "app"


async def test_implicit_tls_with_the_ca_file(smtp_server_factory, smtp_tls):
    server = await smtp_server_factory(tls=True)
    context = ssl.create_default_context(cafile=smtp_tls.ca_pem_path)
    async with anyio_smtp.connect(
        server.host, server.port, tls=True, ssl_context=context
    ) as smtp:
        await smtp.send_mail("app@example.com", ["ada@example.org"], MESSAGE)
    assert [m.tls for m in server.messages] == [True]


@pytest.mark.parametrize(
    "smtp_server", [{"size_limit": 1000}, {"size_limit": 2000}], indirect=True
)
async def test_indirect_options(smtp_server):
    assert smtp_server.size_limit in (1000, 2000)
    assert smtp_server.hostname == "mx.app.test"
    async with anyio_smtp.connect(smtp_server.host, smtp_server.port) as smtp:
        assert smtp.capabilities.size_limit == smtp_server.size_limit


async def test_two_servers(smtp_server_factory):
    primary = await smtp_server_factory()
    primary.reply("MAIL", "421 4.3.2 Going down", close=True)
    own = await smtp_server_factory.start(SMTPTestServer("backup.app.test"))
    assert smtp_server_factory.servers == [primary, own]
    assert primary.port != own.port
    for server in smtp_server_factory.servers:
        try:
            async with anyio_smtp.connect(server.host, server.port) as smtp:
                await smtp.send_mail("app@example.com", ["ada@example.org"], MESSAGE)
        except anyio_smtp.SMTPError:
            continue
        break
    assert (len(primary.messages), len(own.messages)) == (0, 1)
    STOPPED.extend(server.address for server in smtp_server_factory.servers)


async def test_the_servers_of_a_test_stop_when_it_ends():
    assert len(STOPPED) == 2
    for host, port in STOPPED:
        with pytest.raises(OSError):
            await anyio.connect_tcp(host, port)
"""

#: Ways of using the fixtures wrongly, each with its own clear failure.
MISUSE_TESTS = """\
import sys

import pytest


def test_a_sync_test(smtp_server):
    pass


@pytest.mark.smtp_server(bogus=1)
@pytest.mark.anyio
async def test_an_unknown_option(smtp_server):
    pass


@pytest.mark.smtp_server("mx.test")
@pytest.mark.anyio
async def test_a_positional_option(smtp_server):
    pass


@pytest.mark.parametrize("smtp_server", ["mx.test"], indirect=True)
@pytest.mark.anyio
async def test_an_indirect_parameter_that_is_no_dict(smtp_server):
    pass


@pytest.fixture
def no_trustme(monkeypatch):
    monkeypatch.setitem(sys.modules, "trustme", None)


def test_tls_without_trustme(no_trustme, request):
    request.getfixturevalue("smtp_tls")
"""

#: A project of its own, with no use for the fixtures and a fixture of the same name.
UNRELATED_TESTS = """\
import sys

import pytest


@pytest.fixture
def smtp_server():
    return "the project's own"


def test_a_sync_test(request, smtp_server):
    assert smtp_server == "the project's own"
    assert request.config.pluginmanager.has_plugin("anyio_smtp")


@pytest.mark.anyio
async def test_an_async_test(anyio_backend):
    assert anyio_backend == "asyncio"


def test_nothing_of_the_fixtures_was_loaded():
    loaded = {"anyio_smtp.testing._server", "anyio_smtp.testing._tls", "trustme"}
    assert loaded.isdisjoint(sys.modules)
"""


def make_project(pytester: pytest.Pytester, backend: str, **files: str) -> None:
    pytester.makeini(INI)
    pytester.makeconftest(CONFTEST.replace("BACKEND", repr(backend)))
    pytester.makepyfile(
        **{name: text.replace("BACKEND", repr(backend)) for name, text in files.items()}
    )


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-rA", *args, timeout=TIMEOUT)


# -- registration --------------------------------------------------------------------------


def test_the_entry_point_names_the_plugin_module() -> None:
    (entry,) = (e for e in entry_points(group="pytest11") if e.name == "anyio_smtp")
    assert entry.value == "anyio_smtp.testing._pytest_plugin"
    assert entry.load() is plugin


def test_the_plugin_is_active_in_this_suite(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.get_plugin("anyio_smtp") is plugin
    markers = pytestconfig.getini("markers")
    assert any(line.startswith("smtp_server(**options):") for line in markers)


def test_importing_the_plugin_loads_no_server_tls_or_trio() -> None:
    script = (
        "import sys, json\n"
        "import pytest\n"
        "before = set(sys.modules)\n"
        "import anyio_smtp.testing._pytest_plugin\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    added = set(json.loads(done.stdout))
    assert added == {
        "anyio_smtp",
        "anyio_smtp._lazy",
        "anyio_smtp.testing",
        "anyio_smtp.testing._pytest_plugin",
    }


def test_the_testing_package_loads_each_name_on_first_use() -> None:
    import anyio_smtp.testing as testing

    assert set(testing.__all__) == set(testing._HOMES)
    assert set(testing.__all__) <= set(dir(testing))
    for name in testing.__all__:
        value = getattr(testing, name)
        assert getattr(value, "__module__", testing._HOMES[name]) == testing._HOMES[name]
    with pytest.raises(AttributeError, match="not_a_name"):
        testing.not_a_name  # type: ignore[attr-defined]  # noqa: B018


# -- an application's tests, in a project of their own -------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_fixtures_serve_an_applications_tests(pytester: pytest.Pytester, backend: str) -> None:
    make_project(pytester, backend, test_app=APP_TESTS)
    result = run(pytester)
    result.assert_outcomes(passed=8, warnings=0)
    result.stdout.fnmatch_lines(
        [f"PASSED test_app.py::test_indirect_options[smtp_server{i}]" for i in (0, 1)]
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_misuse_fails_with_a_clear_message(pytester: pytest.Pytester, backend: str) -> None:
    make_project(pytester, backend, test_misuse=MISUSE_TESTS)
    result = run(pytester)
    result.assert_outcomes(failed=1, errors=4, warnings=0)
    result.stdout.fnmatch_lines_random(
        [
            "*test_a_sync_test*: the SMTP server fixtures run in the test's event loop, "
            "so they serve async tests only*",
            "*unknown option(s) of the smtp_server fixture: bogus (known: *size_limit*",
            "*@pytest.mark.smtp_server takes keyword arguments only, not ('mx.test',)*",
            "*an indirect parameter of smtp_server is a dict of options, not 'mx.test'*",
            "*the smtp_tls fixture: ThrowawayCA needs the 'trustme' package*",
        ]
    )


def test_a_project_that_does_not_use_the_fixtures_is_unaffected(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester, "asyncio", test_unrelated=UNRELATED_TESTS)
    result = run(pytester)
    result.assert_outcomes(passed=3, warnings=0)
    off = run(pytester, "-p", "no:anyio_smtp", "-k", "test_a_sync_test")
    off.assert_outcomes(failed=1, deselected=2)
    off.stdout.fnmatch_lines(["*has_plugin*"])


# -- the fixtures in this suite, on both backends ------------------------------------------

MESSAGE = b"Subject: hello\r\n\r\nHello!\r\n"


async def test_the_fixture_serves_this_suite(smtp_server: SMTPTestServer) -> None:
    async with anyio_smtp.connect(smtp_server.host, smtp_server.port) as smtp:
        await smtp.send_mail("me@example.com", ["you@example.org"], MESSAGE)
    assert [m.data for m in await smtp_server.wait_for_messages(1)] == [MESSAGE]


@pytest.mark.smtp_server(starttls=True, users={"me": "secret"})
async def test_the_marker_configures_the_server(
    smtp_server: SMTPTestServer, smtp_tls: ThrowawayCA
) -> None:
    assert smtp_server.starttls_context is smtp_tls.server_context
    assert smtp_server.users == {"me": "secret"}
    async with anyio_smtp.connect_starttls(
        smtp_server.host, smtp_server.port, ssl_context=smtp_tls.client_context
    ) as smtp:
        await smtp.login("me", "secret")
        await smtp.send_mail("me@example.com", ["you@example.org"], MESSAGE)
    assert [(m.tls, m.authenticated_as) for m in smtp_server.messages] == [(True, "me")]


async def test_the_factory_refuses_a_context_given_twice(
    smtp_server_factory: SMTPServerFactory, smtp_tls: ThrowawayCA
) -> None:
    context = smtp_tls.server_context
    with pytest.raises(TypeError, match=r"starttls_context given together with starttls=True"):
        await smtp_server_factory(starttls=True, starttls_context=context)
    with pytest.raises(TypeError, match=r"tls_context given together with tls=True"):
        await smtp_server_factory(tls=True, tls_context=context)
    assert smtp_server_factory.servers == []


async def test_a_server_started_twice_is_refused_and_the_first_one_runs_on(
    smtp_server_factory: SMTPServerFactory,
) -> None:
    server = await smtp_server_factory()
    with pytest.raises(RuntimeError, match="already running"):
        await smtp_server_factory.start(server)
    assert smtp_server_factory.servers == [server]
    assert repr(smtp_server_factory) == "<SMTPServerFactory, 1 server(s) started>"
    async with anyio_smtp.connect(server.host, server.port) as smtp:
        await smtp.send_mail("me@example.com", ["you@example.org"], MESSAGE)
    assert len(server.messages) == 1


def test_smtp_tls_holds_its_ca_in_a_file_too(smtp_tls: ThrowawayCA) -> None:
    assert isinstance(smtp_tls.server_context, ssl.SSLContext)
    assert smtp_tls.ca_pem_path is not None
    assert smtp_tls.ca_pem_path.read_bytes() == smtp_tls.ca_pem
