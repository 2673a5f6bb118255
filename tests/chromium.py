"""
Debian's chromium as the browser tests and C{bench/webui.py} start it.

The flags keep a headless chromium off the network, which is closed here:
without them it keeps trying to reach Google's services.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CHROMIUM", "CHROMIUM_ARGS"]

#: Debian's chromium (C{apt-get install chromium}); Playwright downloads no browser.
CHROMIUM = Path("/usr/bin/chromium")

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
