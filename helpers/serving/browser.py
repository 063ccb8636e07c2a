"""Drive the server's drawing page in a real headless Chromium (Playwright).

Uses the system Chromium (``/usr/bin/chromium`` on Debian) instead of a
browser downloaded by Playwright. Run as a script to save a screenshot::

    python -m helpers.serving.browser --digit 7 --screenshot page.png
"""

from __future__ import annotations

import argparse
import math
import shutil
from pathlib import Path

CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _circle(cx: float, cy: float, rx: float, ry: float, steps: int = 40) -> list[tuple[float, float]]:
    return [(cx + rx * math.sin(2 * math.pi * i / steps), cy - ry * math.cos(2 * math.pi * i / steps))
            for i in range(steps + 1)]


# Strokes in canvas pixels (the pad is 280x280), each a polyline drawn with
# the mouse button held down.
STROKES: dict[str, list[list[tuple[float, float]]]] = {
    "0": [_circle(140, 140, 60, 95)],
    "1": [[(150, 40), (145, 140), (140, 240)]],
    "7": [[(70, 55), (210, 55), (170, 140), (130, 240)]],
}


def chromium_path() -> str:
    """Return the system Chromium executable, or raise ``FileNotFoundError``."""
    for name in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if Path(name).exists():
            return name
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    raise FileNotFoundError("Chromium not found; install it (Debian: apt-get install chromium)")


def draw_and_read(url: str, digit: str, screenshot: str | Path | None = None, timeout_ms: int = 30_000) -> dict:
    """Open the page at ``url``, draw ``digit``'s strokes and return what the page shows.

    Returns ``{"prediction": str, "probabilities": [str, ...], "status": str}``.
    With ``screenshot`` set, saves a PNG of the page after the result appears.
    """
    from playwright.sync_api import sync_playwright

    if digit not in STROKES:
        raise ValueError(f"no strokes for digit {digit!r}; available: {sorted(STROKES)}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1160, "height": 540}, device_scale_factor=1)
            page.goto(url.rstrip("/") + "/ui/", timeout=timeout_ms)
            box = page.locator("#pad").bounding_box()
            for stroke in STROKES[digit]:
                page.mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
                page.mouse.down()
                for x, y in stroke[1:]:
                    page.mouse.move(box["x"] + x, box["y"] + y, steps=8)
                page.mouse.up()
            page.wait_for_function(
                "document.querySelectorAll('#probabilities li').length === 10", timeout=timeout_ms
            )
            result = {
                "prediction": page.locator("#prediction").inner_text().strip(),
                "probabilities": page.locator("#probabilities li").all_inner_texts(),
                "status": page.locator("#status").inner_text().strip(),
            }
            if screenshot is not None:
                page.screenshot(path=str(screenshot))
            return result
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Draw a digit on the model server's page and save a screenshot.")
    parser.add_argument("--digit", default="7", choices=sorted(STROKES), help="digit to draw")
    parser.add_argument("--screenshot", type=Path, required=True, help="PNG file to write")
    parser.add_argument("--registry", type=Path, default=None, help="registry folder (default: the data folder's)")
    args = parser.parse_args()

    import tempfile

    from .launch import start_server
    from .settings import ServingSettings

    with tempfile.TemporaryDirectory() as folder:
        settings = ServingSettings(registry_dir=args.registry).to_json(Path(folder) / "settings.json")
        with start_server(settings_path=settings) as server:
            result = draw_and_read(server.url, args.digit, args.screenshot)
    print(f"drew {args.digit}, page shows {result['prediction']}; screenshot {args.screenshot}")


if __name__ == "__main__":
    main()
