"""A test objective that makes the processes of a shared study meet before their first trial.

`sharpe_when_all_started(result)` is the `sharpe` objective; with `ATF_TEST_RENDEZVOUS=DIR:N` in
the environment, the first call in each process registers the process in DIR and waits until
N processes have, so that every process of the test works on the study whatever its start-up
delay (otherwise one quick process may run every trial before a slow one has imported).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from trading.optimize.spec import OBJECTIVES

_met = False


def sharpe_when_all_started(result: Any) -> Any:
    global _met
    spec = os.environ.get("ATF_TEST_RENDEZVOUS")
    if spec and not _met:
        folder, _, count = spec.rpartition(":")
        Path(folder, str(os.getpid())).touch()
        deadline = time.monotonic() + 120  # then go on: the test's assertion names the failure
        while len(os.listdir(folder)) < int(count) and time.monotonic() < deadline:
            time.sleep(0.05)
        _met = True
    return result.metrics.get(OBJECTIVES["sharpe"])
