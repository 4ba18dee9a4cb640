"""Open a dashboard page in headless Chromium (Debian's `chromium` package) through Playwright, without
network: the tests drive it, and `python -m sessa_bench.dashboard.browser PAGE PNG` takes the README's
screenshot from the real page. Playwright's own browser download is never used."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

CHROMIUM = os.environ.get("SESSA_BENCH_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def missing() -> str | None:
    """Why the browser cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; its browser download is not needed)"
    return None


@contextlib.contextmanager
def open_page(path: str | Path, width: int = 1400, height: int = 900):
    """Yields (page, console errors so far) with the page loaded and drawn."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route("http*://**", lambda route: (errors.append(f"network request {route.request.url}"),
                                                    route.abort()))
            page.goto(Path(path).resolve().as_uri())
            page.wait_for_function("document.body.dataset.drawn >= 1")
            yield page, errors
        finally:
            browser.close()


def screenshot(html: str | Path, png: str | Path) -> Path:
    from sessa_bench.files import atomic_write

    with open_page(html) as (page, errors):
        if errors:
            raise RuntimeError(f"{html}: console errors: {errors}")
        return atomic_write(png, lambda tmp: page.screenshot(path=str(tmp), type="png", full_page=False))


if __name__ == "__main__":
    from sessa_bench.errors import user_errors

    if len(sys.argv) != 3:
        sys.exit("usage: python -m sessa_bench.dashboard.browser PAGE.html OUT.png")
    with user_errors("python -m sessa_bench.dashboard.browser"):
        print(f"wrote {screenshot(sys.argv[1], sys.argv[2])}")
