"""A real browser: Debian's headless Chromium driven by Playwright through the whole upload
story (upload two files, confirmation, workers, e-mailed link, download, job page).

Playwright is only the driver: its own browser downloads (``playwright install``) cannot
work here, so it launches the system ``chromium`` through ``executable_path``.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests_support import require_service

from simpletasks.web import SmtpConfig

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    require_service("Debian's chromium is not installed (apt-get install -y chromium)")
    raise AssertionError("unreachable")


@pytest.fixture
def browser_context(tmp_path: Path) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_service("the playwright package is not installed (pip install playwright)")
    executable = chromium_path()
    profile = tmp_path / "profile"  # a fresh --user-data-dir
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            accept_downloads=True,
            viewport={"width": 1000, "height": 700},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def served(env: Any, smtp_server: Any) -> Iterator[tuple[str, Any]]:
    """The app under waitress on 127.0.0.1 (a real HTTP server), its consumer running."""
    import socket

    import waitress

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    app = env.app(
        public_url=url,
        smtp=SmtpConfig(host=smtp_server.host, port=smtp_server.port, sender="st@example.org"),
    )
    server = waitress.create_server(app, host="127.0.0.1", port=port, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    consumer = app.extensions["simpletasks"].consumer
    consumer.start(wait_seconds=0.2)
    try:
        yield url, app
    finally:
        consumer.stop()
        server.close()
        thread.join(5)


def test_upload_mail_download_and_job_page_in_chromium(
    served: tuple[str, Any], browser_context: Any, env: Any, smtp_server: Any, tmp_path: Path
):
    # served comes first so that the browser, set up after it, closes its keep-alive
    # connections before the server stops (the server's thread waits for them otherwise)
    url, _app = served
    shots = tmp_path / "screenshots"
    shots.mkdir()
    first, second = tmp_path / "cells-1.txt", tmp_path / "cells-2.txt"
    first.write_text("first file\n")
    second.write_text("second file\n")

    page = browser_context.new_page()
    page.goto(f"{url}/pipelines/demo")
    page.screenshot(path=str(shots / "1-form.png"), full_page=True)
    page.fill("input[name=email]", "collaborator@example.org")
    page.set_input_files("input[name=files]", [str(first), str(second)])
    page.click("button[type=submit]")
    page.wait_for_selector("#received")
    assert page.inner_text("#received") == "Received 2 file(s)"
    assert page.locator("td.file").all_inner_texts() == ["cells-1.txt", "cells-2.txt"]
    page.screenshot(path=str(shots / "2-received.png"), full_page=True)

    assert env.daemon().run().succeeded == 2  # the workers

    deadline = time.monotonic() + 20
    while not smtp_server.messages:
        assert time.monotonic() < deadline, "no e-mail arrived"
        time.sleep(0.1)
    [mail] = smtp_server.messages
    assert mail["To"] == "collaborator@example.org"
    text = mail.get_payload(decode=True).decode().replace("\r\n", "\n")
    links = dict(re.findall(r"^(cells-\d\.txt): (http://\S+/r/\S+)$", text, re.M))
    assert sorted(links) == ["cells-1.txt", "cells-2.txt"]
    job_url = re.search(r"^Job page: (\S+)$", text, re.M).group(1)

    with page.expect_download() as info:  # follow the e-mailed link
        page.evaluate(
            "url => { const a = document.createElement('a'); a.href = url;"
            " document.body.appendChild(a); a.click(); }",
            links["cells-2.txt"],
        )
    download = info.value
    saved = tmp_path / "downloaded.txt"
    download.save_as(str(saved))
    assert saved.read_text() == "second file\n"
    assert download.suggested_filename == "cells-2.txt"

    page.goto(job_url)
    page.wait_for_selector("#progress")
    assert page.inner_text("#progress") == "2 of 2 task(s) finished"
    assert page.inner_text("#count-succeeded") == "2"
    assert page.locator("a.download").count() == 2
    page.screenshot(path=str(shots / "3-job.png"), full_page=True)
    with page.expect_download() as info:
        page.click("a.download >> nth=0")
    assert info.value.suggested_filename == "cells-1.txt"

    expired = page.goto(links["cells-1.txt"][:-4] + "abcd")  # tampered link
    assert expired is not None and expired.status == 403
    page.screenshot(path=str(shots / "4-tampered.png"), full_page=True)
    assert all(
        (shots / n).stat().st_size > 1000 for n in ("1-form.png", "2-received.png", "3-job.png")
    )
