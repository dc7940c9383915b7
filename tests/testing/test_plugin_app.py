"""An application's tests with the pytest fixtures: a Starlette app that sends mail.

The app is called through httpx's ASGI transport, in the test's event loop, where the
``smtp_server`` fixture runs too. The README's example runs here as a project of its own.
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import anyio_smtp
from anyio_smtp.testing import SMTPServerFactory, SMTPTestServer

pytest_plugins = ["pytester"]

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
SECTION = "### Testing your app with the pytest fixtures"


def readme_blocks() -> list[str]:
    """The python blocks of the README's section on the fixtures."""
    start = README.index(SECTION)
    end = README.index("\n### ", start + len(SECTION))
    blocks: list[str] = re.findall(r"```python\n(.*?)```", README[start:end], re.S)
    return blocks


# -- the app -------------------------------------------------------------------------------


async def contact(request: Request) -> JSONResponse:
    """Forward a contact form to the support desk: 413 if too large, 502 if refused."""
    form: dict[str, Any] = await request.json()
    message = EmailMessage()
    message["From"] = "website@example.com"
    message["To"] = "support@example.com"
    message["Reply-To"] = form["email"]
    message["Subject"] = f"Contact: {form['subject']}"
    message.set_content(form["text"])
    relay: dict[str, Any] = request.app.state.relay
    try:
        async with anyio_smtp.connect(relay["host"], relay["port"]) as smtp:
            await smtp.send_message(message)
    except anyio_smtp.MessageTooLargeError:
        return JSONResponse({"error": "too large"}, status_code=413)
    except anyio_smtp.ReplyError as exc:
        return JSONResponse({"error": exc.reply.message}, status_code=502)
    return JSONResponse({"sent": True})


def make_app(server: SMTPTestServer) -> Starlette:
    app = Starlette(routes=[Route("/contact", contact, methods=["POST"])])
    app.state.relay = {"host": server.host, "port": server.port}
    return app


async def post(app: Starlette, **form: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
        return await client.post("/contact", json=form)


FORM = {"email": "ada@example.org", "subject": "Hello", "text": "Is it on?"}


# -- its tests, as the app's own suite would have them ------------------------------------


async def test_the_contact_form_reaches_the_support_desk(smtp_server: SMTPTestServer) -> None:
    response = await post(make_app(smtp_server), **FORM)
    assert (response.status_code, response.json()) == (200, {"sent": True})
    (mail,) = smtp_server.messages
    assert (mail.sender, mail.recipients) == ("website@example.com", ("support@example.com",))
    parsed = mail.as_email()
    assert parsed["Reply-To"] == "ada@example.org"
    assert parsed["Subject"] == "Contact: Hello"
    assert parsed.get_content().rstrip() == "Is it on?"


async def test_a_refused_message_is_a_bad_gateway(smtp_server: SMTPTestServer) -> None:
    smtp_server.reply("EOM", "554 5.7.1 Message rejected as spam", times=1)
    app = make_app(smtp_server)
    response = await post(app, **FORM)
    assert response.status_code == 502
    assert "rejected as spam" in response.json()["error"]
    assert smtp_server.messages == []
    assert (await post(app, **FORM)).status_code == 200
    assert len(smtp_server.messages) == 1


@pytest.mark.smtp_server(size_limit=2000)
async def test_the_size_limit_of_each_relay(
    smtp_server: SMTPTestServer, smtp_server_factory: SMTPServerFactory
) -> None:
    # A second relay, with a smaller limit, made in the test.
    small = await smtp_server_factory(size_limit=500)
    form = {**FORM, "text": "x" * 1000}
    assert (await post(make_app(smtp_server), **form)).status_code == 200
    assert (await post(make_app(small), **form)).status_code == 413
    assert (len(smtp_server.messages), small.messages) == (1, [])


# -- the README's example, as a project of its own ----------------------------------------


def test_the_readme_example_passes_on_both_backends(pytester: pytest.Pytester) -> None:
    conftest, app_test = readme_blocks()
    assert conftest.startswith("# conftest.py\n")
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider --strict-markers\n")
    pytester.makeconftest(conftest)
    pytester.makepyfile(test_app=app_test)
    result = pytester.runpytest_subprocess("-rA", "-W", "error::ResourceWarning", timeout=120)
    result.assert_outcomes(passed=2, warnings=0)
    result.stdout.fnmatch_lines_random(
        [
            "PASSED test_app.py::test_signup_sends_a_welcome_mail[[]asyncio[]]",
            "PASSED test_app.py::test_signup_sends_a_welcome_mail[[]trio[]]",
        ]
    )
