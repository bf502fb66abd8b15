"""Micro-benchmark: the cost of click links (issue 9) on building messages.

    .venv/bin/python bench/bench_clicks.py

The 12-story bench digest of bench_message.py (every story with a link of its own),
rendered with TRACK_CLICKS on and off, messages built for distinct recipients in
interleaved rounds in one process, so the shared machine's load hits both alike.
Prints messages/s for each and the ratio of their times.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_message as b  # noqa: E402

from newsletter.composer import compose  # noqa: E402
from newsletter.message import MessageFactory, Recipient  # noqa: E402
from newsletter.render import render_digest  # noqa: E402
from newsletter.settings import settings  # noqa: E402

issue = b.make_issue(50)
c = compose(issue, followed=["logistics"], max_items=12)
assert c is not None
factories = {}
for track in (True, False):
    settings.track_clicks = track
    factories[track] = MessageFactory(digest=render_digest(issue, c), issue_id=1)
times = {True: 0.0, False: 0.0}
n = 0
for _round in range(10):
    for track in (True, False):
        f = factories[track]
        t = time.perf_counter()
        for i in range(300):
            f.build(Recipient(n + i, f"r{i}@example.com", f"R {i}"))
        times[track] += time.perf_counter() - t
    n += 300
for track in (True, False):
    print(f"track_clicks={track}: {3000 / times[track]:,.0f} msg/s")
print(f"ratio on/off: {times[True] / times[False]:.2f}x the time")
