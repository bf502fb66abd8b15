"""The composition-count bench, small: learning must not double the distinct renders."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_compositions.py"


@pytest.mark.slow
def test_learned_interests_keep_distinct_renders_within_twice_todays(session):
    spec = importlib.util.spec_from_file_location("bench_compositions", BENCH)
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    lines: list[str] = []
    worst = bench.measure(session, 2000, 11, show=lines.append, compare=False)
    assert 1.0 < worst < 2.0, "\n".join(lines)
