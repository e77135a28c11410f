"""The web page in a real headless Chromium: upload a real photo and see its label; see errors in words."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from imagenet_zoo.server import Settings
from tests.conftest import SAMPLE_DIR, running_app
from tests.test_serve_process import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@pytest.fixture
def server_url(with_lite0: Path) -> Iterator[str]:
    with running_app(Settings(), free_port()) as url:
        yield f"http://{url}"


@contextmanager
def browser_at(url: str) -> Iterator[Any]:
    """A page of Debian's headless chromium at `url` (a failure in CI if chromium is missing)."""
    if not CHROMIUM.exists():
        message = "Debian's chromium is needed for the browser test (apt-get install chromium)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(url)
        yield page
        browser.close()


@pytest.fixture
def page(server_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    with browser_at(server_url) as page:
        yield page
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)


def test_upload_a_photo_and_see_its_label(page) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_selector("#model option", state="attached")
    assert page.locator("label[for=model]").inner_text() == "Model"
    assert page.locator("label[for=file]").inner_text() == "Photo"
    page.set_input_files("#file", str(SAMPLE_DIR / "n01440764_tench.JPEG"))
    first = page.locator("#results li").first
    first.wait_for(timeout=60_000)
    assert first.inner_text().startswith("1. tench")
    assert page.locator("#results li").count() == 5
    assert "answered in" in page.locator("#latency").inner_text()
    assert page.locator("#results .bar").first.get_attribute("aria-label").startswith("tench:")


def test_a_text_file_shows_the_error_in_words(page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    notes = tmp_path / "notes.jpg"
    notes.write_text("this is not a photo")
    page.wait_for_selector("#model option", state="attached")
    page.set_input_files("#file", str(notes))
    error = page.locator("#error")
    error.filter(has_text="That did not work").wait_for(timeout=30_000)
    assert "not an image" in error.inner_text()
    assert page.locator("#results li").count() == 0


def test_the_heatmap_toggle_and_group_scores(page) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_selector("#model option", state="attached")
    assert page.locator("label[for=explain]").inner_text() == "Show where it looked"
    page.set_input_files("#file", str(SAMPLE_DIR / "n02108915_French_bulldog.JPEG"))
    page.locator("#results li").first.wait_for(timeout=60_000)
    groups = page.locator("#group-results li")
    assert groups.count() == 4 and groups.first.inner_text().startswith("dog (118 classes)")
    preview = page.locator("#preview")
    page.wait_for_function("document.getElementById('preview').src.startsWith('data:image/png')")
    assert "heatmap" in preview.get_attribute("alt")
    assert 'evidence for "French bulldog"' in page.locator("#heatmap-caption").inner_text()
    assert page.evaluate("document.getElementById('preview').naturalWidth") > 0  # the PNG decodes
    page.uncheck("#explain")  # the photo itself again, no new request
    assert preview.get_attribute("src").startswith("blob:")
    assert page.locator("#heatmap-caption").is_hidden()
    page.check("#explain")
    assert preview.get_attribute("src").startswith("data:image/png")


@pytest.fixture
def keyed_page(with_lite0: Path):  # type: ignore[no-untyped-def]
    settings = Settings(api_keys=("page-test-key-0123456789",))
    with running_app(settings, free_port()) as url, browser_at(f"http://{url}") as page:
        yield page


def test_the_page_asks_for_the_api_key_and_then_works(keyed_page) -> None:  # type: ignore[no-untyped-def]
    page = keyed_page
    page.locator("#key-box").wait_for(state="visible", timeout=30_000)
    assert "needs an API key" in page.locator("#error").inner_text()
    assert page.locator("label[for=key]").inner_text() == "API key"
    page.fill("#key", "page-test-key-0123456789")
    page.click("#key-box button")
    page.wait_for_selector("#model option", state="attached")
    assert page.locator("#key-box").is_hidden()
    page.set_input_files("#file", str(SAMPLE_DIR / "n01440764_tench.JPEG"))
    page.locator("#results li").first.wait_for(timeout=60_000)
    assert page.locator("#results li").first.inner_text().startswith("1. tench")
