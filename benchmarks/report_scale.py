"""The HTML report at scale: 10,000 cases x 6 configs, its size and time to interactive.

Run: .venv/bin/python benchmarks/report_scale.py [--cases N] [--out FILE]
Bounds: the file under 25 MB; interactive in headless Chromium in under 3 s (from
navigation start until the page's script has parsed the embedded data and rendered the
first page of the case grid), and a filter click answered well within that.

Needs Debian's chromium and chromium-driver and selenium (the dev extra) for the browser
figures; without them it prints the size and rendering time only.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evalgate.report.html import write_html
from evalgate.testing.report_data import DEFAULT_CONFIGS, synthetic_document

SIZE_LIMIT_MB = 25.0
INTERACTIVE_LIMIT_S = 3.0


def browser_figures(page: Path) -> dict[str, float] | None:
    """Seconds to interactive (median of 3 cold loads) and to apply the Misses filter."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        return None
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        loads, walls = [], []
        for _ in range(3):
            driver.get("about:blank")
            start = time.perf_counter()
            driver.get(page.resolve().as_uri())
            while not driver.execute_script("return document.body.dataset.ready === '1'"):
                time.sleep(0.01)
            walls.append(time.perf_counter() - start)
            # performance.now() at the script's end: ms since this navigation started.
            loads.append(driver.execute_script("return window.evalgateReady") / 1000)
        filter_s = driver.execute_script(
            "var t = performance.now();"
            "document.querySelector('.drill button[data-filter=miss]').click();"
            "return (performance.now() - t) / 1000;"
        )
        return {
            "interactive_s": sorted(loads)[1],
            "wall_s": sorted(walls)[1],
            "filter_s": float(filter_s),
        }
    finally:
        driver.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--out", type=Path, help="keep the page here (default: a temp dir)")
    args = parser.parse_args()

    start = time.perf_counter()
    document = synthetic_document(args.cases, DEFAULT_CONFIGS)
    built = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        page = args.out or Path(tmp) / "evalgate.html"
        start = time.perf_counter()
        write_html(document, page)
        rendered = time.perf_counter() - start
        size_mb = page.stat().st_size / 1e6
        print(
            f"report: {args.cases} cases x {len(DEFAULT_CONFIGS)} configs "
            f"({args.cases * len(DEFAULT_CONFIGS)} results)"
        )
        print(f"  synthetic run + statistics: {built:.1f} s; HTML rendering: {rendered:.2f} s")
        print(f"  file size: {size_mb:.1f} MB (limit {SIZE_LIMIT_MB:.0f} MB)")
        ok = size_mb < SIZE_LIMIT_MB
        figures = browser_figures(page)
        if figures is None:
            print("  browser: skipped (needs chromium, chromium-driver and selenium)")
        else:
            print(
                f"  time to interactive (headless Chromium, median of 3): "
                f"{figures['interactive_s']:.2f} s (limit {INTERACTIVE_LIMIT_S:.0f} s; "
                f"{figures['wall_s']:.2f} s as the driver saw it)"
            )
            print(f"  Misses filter over every case: {figures['filter_s'] * 1000:.0f} ms")
            ok = ok and figures["interactive_s"] < INTERACTIVE_LIMIT_S
    print("bounds: met" if ok else "bounds: NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
