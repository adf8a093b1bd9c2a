"""Progress's log lines: periodic counts, one summary at the end, and no bar where asked."""

from __future__ import annotations

import logging
import sys

from latent_verbalizer.components.common import progress as progress_module
from latent_verbalizer.components.common.progress import Progress


def test_the_last_count_is_logged_once_by_close(monkeypatch, caplog):
    monkeypatch.setattr(progress_module, "LOG_EVERY_S", 0.0)          # every update may log
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    log = logging.getLogger("test-progress")
    with caplog.at_level(logging.INFO, logger="test-progress"), Progress("work", "items", total=4, logger=log) as p:
        p.update(3)
        p.update(1)
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(" in ")[0] for line in lines] == ["work: 3/4 items", "work: 4/4 items"], lines


def test_no_bar_where_asked_even_in_a_terminal(monkeypatch, caplog):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    in_terminal = Progress("work", "items", total=1)
    assert in_terminal.bar is not None
    in_terminal.bar.close()
    log = logging.getLogger("test-progress")
    with caplog.at_level(logging.INFO, logger="test-progress"), Progress("work (2 processes)", "items", total=2,
                                                                         logger=log, bar=False) as p:
        assert p.bar is None
        p.update(2)
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == ["work (2 processes): 2/2 items"]
