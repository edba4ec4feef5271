"""Screenshot an HTML report with headless Chromium, fully offline.

Usage: ``python scripts/screenshot_report.py REPORT.html OUT.png [--fragment 'playbook=Win-back&customer=C1']``
       ``python scripts/screenshot_report.py REPORT.html OUT.html --dump-dom [--fragment ...]``

The fragment is the report's URL hash: it selects filters and opens a customer's detail panel, so a
scripted check can load a filtered view and read the resulting DOM (``--dump-dom``).

Used to eyeball the analyst report as a browser renders it. Chromium runs with networking features
off and a throw-away profile, so the screenshot also shows what an offline reader sees.
Exit codes: 0 ok, 2 no Chromium found, 1 Chromium failed or wrote no image.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WINDOW = "1400,3000"
TIMEOUT_S = 120


def find_chromium() -> str | None:
    """Path of the first Chromium-like browser found (the Debian path first, then PATH)."""
    for name in CANDIDATES:
        if Path(name).is_absolute():
            if Path(name).is_file():
                return name
        elif found := shutil.which(name):
            return found
    return None


def report_url(report: Path, fragment: str = "") -> str:
    """``file://`` URL of the report, with ``#fragment`` when given."""
    return report.resolve().as_uri() + (f"#{fragment.lstrip('#')}" if fragment else "")


def chromium_command(browser: str, report: Path, out: Path, profile: Path, window: str = WINDOW,
                     fragment: str = "", dump_dom: bool = False) -> list[str]:
    """The headless Chromium command line for one screenshot (or one DOM dump, printed on stdout)."""
    return [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={window}",
        "--dump-dom" if dump_dom else f"--screenshot={out}",
        report_url(report, fragment),
    ]


def dump_dom(report: Path, browser: str, fragment: str = "") -> str:
    """The page's DOM after its script ran (filters and detail applied from ``fragment``)."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = chromium_command(browser, report, Path(profile) / "unused.png", Path(profile), fragment=fragment,
                               dump_dom=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    if proc.returncode != 0 or "<html" not in proc.stdout:
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-15:])
        raise RuntimeError(f"Chromium exited {proc.returncode} without a DOM:\n{tail}")
    return proc.stdout


def screenshot(report: Path, out: Path, browser: str, window: str = WINDOW, fragment: str = "") -> Path:
    """Render ``report`` to the PNG ``out``; raises RuntimeError when no image comes out."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = chromium_command(browser, report, out, Path(profile), window, fragment=fragment)
        logger.info("running %s", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    if proc.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-15:])
        raise RuntimeError(f"Chromium exited {proc.returncode} without writing {out}:\n{tail}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Screenshot an HTML report with headless Chromium (offline)."
    )
    parser.add_argument("report", type=Path, help="HTML file to render")
    parser.add_argument("out", type=Path, help="PNG file to write")
    parser.add_argument("--window-size", default=WINDOW, help=f"WIDTH,HEIGHT in pixels (default {WINDOW})")
    parser.add_argument("--fragment", default="", help="URL hash selecting filters/detail, e.g. 'playbook=Win-back'")
    parser.add_argument("--dump-dom", action="store_true", help="write the DOM after the script ran to OUT instead")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    if not args.report.is_file():
        logger.error("report not found: %s", args.report)
        return 1
    browser = find_chromium()
    if browser is None:
        logger.error(
            "no Chromium found: looked for %s. Install one (Debian: apt-get install chromium).",
            ", ".join(CANDIDATES),
        )
        return 2
    try:
        if args.dump_dom:
            args.out.write_text(dump_dom(args.report, browser, args.fragment), encoding="utf-8")
            out = args.out
        else:
            out = screenshot(args.report, args.out, browser, args.window_size, args.fragment)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        logger.error("%s", exc)
        return 1
    logger.info("wrote %s (%d bytes)", out, out.stat().st_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
