"""
Run C{twist} (what C{python -m twisted} runs) under cProfile and write the
stats when it ends, even when it ends by SIGTERM or SIGINT.

    python bench/twist_profiled.py STATS_FILE [twist options] midjobs [midjobs options]

C{python -m cProfile -o STATS -m twisted ...} writes nothing when the daemon is
stopped by a signal: twist re-raises the signal once the reactor has stopped,
so the process dies before cProfile saves.  Here the stats are saved just before that.
"""

from __future__ import annotations

import cProfile
import sys

from twisted.application.twist import _twist


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit(__doc__)
    out = argv[0]
    profile = cProfile.Profile()
    saved = False

    def save() -> None:
        nonlocal saved
        if not saved:
            saved = True
            profile.disable()
            profile.dump_stats(out)

    exit_with_signal = _twist._exitWithSignal

    def save_then_exit_with_signal(sig: int) -> None:
        save()
        exit_with_signal(sig)

    _twist._exitWithSignal = save_then_exit_with_signal  # type: ignore[assignment]
    profile.enable()
    try:
        _twist.Twist.main(["twist", *argv[1:]])
    finally:
        save()


if __name__ == "__main__":
    main(sys.argv[1:])
