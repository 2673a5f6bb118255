"""
What metrics cost: bench/jobs.py's daemon run without and with /metrics
scraped every second, in the same run (issue 14; target: less than 5% fewer
jobs per second when scraped).

    .venv/bin/python bench/metrics.py [--count 20000] [--clients 32] [--rounds 2]

Each round runs a fresh daemon without scraping, then a fresh one with a
scraper (a fresh connection each second with the API key of a
METRICS_READ user, as Prometheus does); the rounds alternate so a drift of the machine's
load falls on both.  Reported: jobs/s of each run, the best of each kind,
and the loss; a final JSON line.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from jobs import bench_daemon, parse_args  # noqa: E402  (bench/jobs.py)

from twisted.internet.task import react  # noqa: E402

#: Most share of the plain rate metrics may cost.
TARGET = 0.05


async def main(reactor: Any, argv: list[str]) -> None:
    rounds = 2
    if "--rounds" in argv:
        i = argv.index("--rounds")
        rounds = int(argv[i + 1])
        del argv[i : i + 2]
    args = parse_args(argv)
    runs: dict[bool, list[float]] = {False: [], True: []}
    scrapes = 0
    for round_ in range(rounds):
        for scrape in (False, True) if round_ % 2 == 0 else (True, False):
            tmp = tempfile.mkdtemp(prefix="mjm-")
            try:
                result = await bench_daemon(reactor, args, tmp, scrape=scrape)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            rate = args.count / result["wall_s"]
            runs[scrape].append(rate)
            scrapes += result.get("scrapes", 0)
            label = "scraped every 1 s" if scrape else "not scraped     "
            print(f"round {round_ + 1}: {label} {rate:8.0f} jobs/s" + (f" ({result['scrapes']} scrapes)" if scrape else ""))
    plain, scraped = max(runs[False]), max(runs[True])
    loss = 1 - scraped / plain
    print(f"best: {plain:.0f} jobs/s not scraped, {scraped:.0f} scraped: {loss:+.1%} "
          f"({'within' if loss < TARGET else 'PAST'} the {TARGET:.0%} target)")
    print(json.dumps({"plain_jobs_per_s": runs[False], "scraped_jobs_per_s": runs[True], "loss": loss,
                      "scrapes": scrapes, "target": TARGET}))


if __name__ == "__main__":
    react(main, (sys.argv[1:],))
