"""The README's screenshot of the report's explorer, taken in a real browser from a fresh demo.

    python scripts/explorer_screenshot.py [--out runs/demo] [--image docs/img/demo_explorer.png]

runs `pqtradeoff demo` (default settings) into --out unless it holds a report already, opens its report.html
in headless Chromium (Debian's `chromium`, driven by Playwright, offline), hovers and clicks the configuration
on the Pareto frontier with the highest reward, and saves the controls, the plane with its hover label and the
first strings below it as a PNG. Needs the `test` extra (playwright) and /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "docs" / "img" / "demo_explorer.png"


def screenshot(browser: Any, report: Path, image: Path, adaptor: str) -> Path:
    """Hover and click `adaptor` on the report's plane in Playwright's `browser`; save the explorer's top."""
    page = browser.new_context(viewport={"width": 1150, "height": 1400}, offline=True).new_page()
    page.goto(report.resolve().as_uri())
    page.wait_for_selector("#pq-explorer[data-ready='1']", timeout=60_000)
    index = page.evaluate("""name => document.getElementById('pq-plane').data.findIndex(
        t => t.name === name && t.meta.role === 'centre')""", adaptor)
    if index < 0:
        raise SystemExit(f"{adaptor!r} is not on the report's plane")
    marker = page.locator("#pq-plane .scatterlayer .trace").nth(index).locator(".points path").first

    def centre() -> tuple[float, float]:
        box = marker.bounding_box()
        return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    page.locator("#explore").scroll_into_view_if_needed()
    page.mouse.click(*centre())
    page.wait_for_selector("#pq-strings tbody tr")
    page.evaluate("() => document.getElementById('explore').scrollIntoView()")
    x, y = centre()
    page.mouse.move(x - 3, y - 3)
    page.mouse.move(x, y, steps=3)
    page.locator("#pq-plane .hoverlayer .hovertext").first.wait_for()
    top = page.locator("#pq-controls").bounding_box()["y"]
    bottom = page.locator("#pq-strings h4").nth(1).bounding_box()["y"]
    image.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(image), clip={"x": 0, "y": top - 10, "width": 1150, "height": bottom - top})
    page.context.close()
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "demo", help="the demo's folder")
    parser.add_argument("--image", type=Path, default=IMAGE, help="where the PNG goes")
    args = parser.parse_args()
    import json

    if not (args.out / "report.html").is_file():
        from pqtradeoff.demo import make_settings, run_demo

        run_demo(args.out, make_settings(), progress=False)
    summary = json.loads((args.out / "summary.json").read_text(encoding="utf-8"))
    best = max((c for c in summary["configs"] if c["on_frontier"]), key=lambda c: c["mean_reward"])
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = shutil.which("chromium") or "/usr/bin/chromium"
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            print(screenshot(browser, args.out / "report.html", args.image, best["adaptor"]))
        finally:
            browser.close()


if __name__ == "__main__":
    main()
