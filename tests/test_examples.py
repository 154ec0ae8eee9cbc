"""The example scripts (the blog post's two patterns) run unchanged."""

import importlib
import pathlib
import sys

import numpy as np

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    # Imported by name, as a user's script would be, so a process pool can
    # pickle its functions by reference.
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)


def test_sleep_fanout_runs_all_sixteen_tasks_at_once(capsys):
    spans, pool_spans = _load("sleep_fanout").main()
    assert len(spans) == 16
    # Peak number of tasks sleeping at the same moment.  Workers come up a
    # few ms apart, so the 0.1 s task may end before the last one starts;
    # run one after another, the peak would be 1.
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak >= 12, "only %d of 16 tasks ran at the same time" % peak
    assert "ProcessPoolExecutor" in capsys.readouterr().out


def test_matrix_tree_matches_numpy():
    result = _load("matrix_tree").main()
    assert result.shape == (1000, 1000) and np.isfinite(result).all()
