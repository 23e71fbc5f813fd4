"""ActionLog: the operator actions a paper bot applied, and at which bar, so a restart re-runs them.

A paper bot with a ``persistence:`` section recovers from a crash by re-running its bars from
the start (`trading.recovery`). The bars do not hold what an operator did: a pause of entries
(Telegram ``/stopentry``), a resume (``/start``), a forced exit (``/forceexit SYMBOL|all``),
an emergency stop, or the cancels of a stop with ``--cancel-on-stop``. This log does:

* while the bot runs, an operator's request is queued (`request`, thread-safe) and taken by
  the strategy at the start of its next bar (`at_bar`, on the bar thread), where it is
  appended to the log (one JSON line, flushed and fsynced) *before* the strategy acts on it,
  so a kill -9 never leaves an applied action out of the log;
* a restarted instance reads the log and, on its re-run, gives each action to the strategy
  again at the same bar (`len(strategy)`, the bar clock; the bar's time is checked too), in
  the same order and through the same code path: the same client order ids and events come
  out and `CrashRecovery` finds the run where the earlier one stopped. The cancels of a
  ``--cancel-on-stop`` stop are re-run at the end of their bar (`after_bar`), where the stop
  made them;
* operator requests that arrive while the re-run is still before the earlier run's last
  action or before the resume point (`AuditSession.recovering`) wait in the queue and are
  applied (and logged) at the first bar after both.

The file lives next to the spool and the saved paper broker state:
``<spool_dir>/audit-<bot>-<id>.actions.jsonl``. Records::

    {"bar": 215, "ts": "2021-03-09T22:00:00+00:00", "kind": "force_exit", "symbol": "AAA",
     "reason": "force_exit"}
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
SUFFIX = ".actions.jsonl"

STOP_ENTRIES = "stop_entries"
RESUME = "resume"
FORCE_EXIT = "force_exit"
EMERGENCY_STOP = "emergency_stop"
CANCEL_ON_STOP = "cancel_on_stop"
KINDS = (STOP_ENTRIES, RESUME, FORCE_EXIT, EMERGENCY_STOP, CANCEL_ON_STOP)
REASONS = {
    STOP_ENTRIES: "ENTRIES_PAUSED",
    RESUME: "RESUME_COMMAND",
    FORCE_EXIT: "force_exit",
    EMERGENCY_STOP: "EMERGENCY_STOP",
    CANCEL_ON_STOP: "STOP",
}


def action_log_path(state_path: str | Path) -> Path:
    """The action log beside a saved paper broker state (``audit-<bot>-<id>.broker.json``)."""
    path = Path(state_path)
    return path.with_name(path.name.removesuffix(".broker.json") + SUFFIX)


@dataclass(frozen=True)
class Action:
    bar: int  # len(strategy) when applied: the bar clock
    ts: str | None  # the bar's time (ISO)
    kind: str
    symbol: str | None = None
    reason: str = ""


class ActionLog:
    """The operator actions of one paper bot instance; see the module docstring.

    `apply(kind, symbol)` is the bot's own handler of a request (what it did before there was a
    log); `holding()` is True while the re-run is before the resume point (then new requests
    wait)."""

    def __init__(
        self,
        path: str | Path,
        apply: Callable[[str, str | None], None],
        *,
        fresh: bool = False,
        holding: Callable[[], bool] = lambda: False,
    ) -> None:
        self.path = Path(path)
        self._apply = apply
        self._holding = holding
        self.replay: list[Action] = [] if fresh else self._read()
        self.cursor = 0  # the next logged action to re-run
        self.replayed = 0
        self.skipped: list[Action] = []  # logged actions the re-run never reached at their bar
        self.requests: deque[tuple[str, str | None]] = deque()
        self._lock = threading.Lock()
        if fresh and self.path.exists():
            self.path.unlink()

    def _read(self) -> list[Action]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # killed mid-write: that action was never applied
            keep = data[: data.rfind(b"\n") + 1]
            log.warning("action log %s: a torn last line dropped", self.path)
            with open(self.path, "r+b") as f:
                f.truncate(len(keep))
                f.flush()
                os.fsync(f.fileno())
            data = keep
        out: list[Action] = []
        for n, line in enumerate(data.decode().splitlines(), 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                out.append(Action(int(doc["bar"]), doc.get("ts"), str(doc["kind"]), doc.get("symbol"),
                                  str(doc.get("reason", ""))))
            except (ValueError, KeyError, TypeError):
                log.warning("action log %s: line %d unreadable, ignored", self.path, n)
        return out

    # ------------------------------------------------------------------ the operator's side
    def request(self, kind: str, symbol: str | None = None) -> None:
        """Queue an operator's request for the next bar (thread-safe, returns at once)."""
        if kind not in KINDS:
            raise ValueError(f"unknown operator action {kind!r}")
        with self._lock:
            self.requests.append((kind, symbol))

    @property
    def holding(self) -> bool:
        """True while the re-run is still before the resume point (new requests wait)."""
        return self._holding()

    @property
    def replaying(self) -> bool:
        """True while logged actions of the earlier runs are still to be re-run."""
        return self.cursor < len(self.replay)

    # ------------------------------------------------------------------ the bar thread
    def at_bar(self, bar: int, ts: datetime | None) -> None:
        """At the start of a bar: re-run the logged actions of this bar, then (past the resume
        point) log and apply the requests queued since the last bar."""
        self._replay(bar, ts, end_of_bar=False)
        if self.replaying or self.holding:
            return
        while True:
            with self._lock:
                if not self.requests:
                    break
                kind, symbol = self.requests.popleft()
            self.record(bar, ts, kind, symbol)
            self._apply(kind, symbol)

    def after_bar(self, bar: int, ts: datetime | None) -> None:
        """At the end of a bar: re-run a logged ``cancel_on_stop`` of this bar."""
        self._replay(bar, ts, end_of_bar=True)

    def _replay(self, bar: int, ts: datetime | None, *, end_of_bar: bool) -> None:
        while self.replaying:
            act = self.replay[self.cursor]
            if act.bar < bar:  # the re-run passed its bar without it: history differs
                log.error("action log %s: %s at bar %d (%s) not re-run; recovery will refuse "
                          "if it changed the run", self.path, act.kind, act.bar, act.ts)
                self.skipped.append(act)
                self.cursor += 1
                continue
            if act.bar > bar or (act.kind == CANCEL_ON_STOP) != end_of_bar:
                return
            if ts is not None and act.ts is not None and act.ts != ts.isoformat():
                log.warning("action log %s: %s at bar %d was at %s, the re-run's bar is at %s",
                            self.path, act.kind, act.bar, act.ts, ts.isoformat())
            self.cursor += 1
            self.replayed += 1
            self._apply(act.kind, act.symbol)

    def record(self, bar: int, ts: datetime | None, kind: str, symbol: str | None = None) -> Action:
        """Append an applied action (before it acts): one line, flushed and fsynced."""
        act = Action(bar, None if ts is None else ts.isoformat(), kind, symbol, REASONS.get(kind, ""))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(asdict(act), separators=(",", ":")) + "\n"
        with open(self.path, "ab") as f:
            f.write(line.encode())
            f.flush()
            os.fsync(f.fileno())
        log.info("operator action %s%s applied at bar %d (%s)", kind, f" {symbol}" if symbol else "",
                 bar, act.ts)
        return act

    def summary(self) -> dict[str, Any]:
        return {"path": str(self.path), "logged": len(self.replay), "replayed": self.replayed,
                "skipped": len(self.skipped), "queued": len(self.requests)}
