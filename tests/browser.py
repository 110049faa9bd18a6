"""Debian's Chromium, headless, driven by Playwright for Python: the dashboard's tests
see the pages as an operator does. Playwright's own browser builds are not used."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# A page's wait for what the controller changed: well past the 1 s the stream takes.
SEEN_WITHIN_MS = 10_000


@contextmanager
def chromium(profile: Path) -> Iterator[BrowserContext]:
    """The system's Chromium with a fresh user data dir, ``profile``; each page opened
    in it is a tab of its own, whose sessionStorage (the token) no other tab shares."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail("chromium is missing: scripts/install-debian-deps.sh installs it")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            args=ARGS,
            headless=True,
            viewport={"width": 1400, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


class Tab:
    """A page, with the script errors it raised."""

    def __init__(self, context: BrowserContext) -> None:
        self.page = context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def no_script_errors(self) -> None:
        assert not self.errors, self.errors


def sign_in(page: Page, base: str, token: str) -> None:
    """Open the dashboard and sign in with ``token``, as an operator types it."""
    page.goto(f"{base}/ui/")
    page.fill("#token", token)
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#who")).not_to_be_empty()
    expect(page.locator("#live")).to_have_text("live", timeout=SEEN_WITHIN_MS)


def open_tab(page: Page, tab: str) -> None:
    page.click(f"#tabs a[data-tab={tab}]")
    expect(page.locator("#page")).to_have_attribute("data-page", tab, timeout=SEEN_WITHIN_MS)


def shot(page: Page, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
