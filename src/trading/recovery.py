"""Crash recovery of paper bots: re-run the bars, check the run where the last one stopped.

Paper replays are deterministic (same bars, same client order ids, same fills), so a
restarted paper bot re-runs its bars from the start. A paper bot on a ccxt exchange's live
candles does too: its feed fetches the closed candles again from the first run's first one and
hands them over as its bar log says the earlier runs had them (`trading.data.bar_log`). What
the bars do not hold, the operator's actions (pause, resume, forced exit, emergency stop, a
``--cancel-on-stop`` stop's cancels), the re-run applies again at the bars its action log
names (`trading.action_log`).
`CrashRecovery` watches that run:

* events it re-produces for bars already recorded carry the same idempotency keys and
  `apply_events` skips them (nothing is written twice);
* the events after the last one the database holds are the ones lost in the crash (the
  writer records them as the real events);
* at the point where the previous run stopped (its last recorded event, or the point of the
  saved paper broker state if that is later) the re-derived book is compared with the saved
  paper broker state and, through `trading.reconcile.reconcile`, with the database: what the
  lost events explain is written as ``reconciliation`` events, anything else stops the bot
  (`on_refuse`) with a `ReconciliationMismatch` listing each difference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.engine import Engine

from trading.broker_state import COUNTED, BrokerStateFile, PaperBrokerState
from trading.events import Event
from trading.persistence.audit import event_key
from trading.persistence.db import read_connection
from trading.persistence.models import OrderEventRecord, RiskEventRecord, table
from trading.persistence.recovery import StoredOrder, load_open_orders, load_positions
from trading.positions import Position
from trading.reconcile import (
    BrokerView,
    Correction,
    ManagerView,
    Mismatch,
    Reconciliation,
    ReconciliationMismatch,
    diff_books,
    reconcile,
    reconcile_with_broker,
    same_amount,
)

__all__ = [
    "BrokerView",
    "CrashRecovery",
    "ManagerView",
    "Mismatch",
    "Reconciliation",
    "ReconciliationMismatch",
    "ResumePoint",
    "diff_books",
    "load_resume_point",
    "reconcile",
    "reconcile_with_broker",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResumePoint:
    """Where the previous run of a bot instance stopped, as the database and its saved
    paper broker state tell it."""

    db_last_key: str | None
    db_last_ts: datetime | None
    db_orders: list[StoredOrder]
    db_positions: list[Position]
    state: PaperBrokerState | None

    @property
    def active(self) -> bool:
        return self.db_last_key is not None or (self.state is not None and self.state.count > 0)

    @property
    def ts(self) -> datetime | None:
        times = [t for t in (self.db_last_ts, self.state.last_ts if self.state else None) if t]
        return max(times, default=None)


def load_resume_point(
    engine: Engine, bot_instance_id: int, state_file: BrokerStateFile | None = None
) -> ResumePoint:
    """Read the last recorded event (order or risk, not a reconciliation) and the open book."""
    last: tuple[int, str, datetime] | None = None
    with read_connection(engine) as conn:
        for log_table in (table(OrderEventRecord), table(RiskEventRecord)):
            stmt = select(log_table.c.seq, log_table.c.event_key, log_table.c.ts).where(
                log_table.c.bot_instance_id == bot_instance_id,
                log_table.c.event_type != "Reconciliation",  # written by recovery itself
            )
            row = conn.execute(stmt.order_by(log_table.c.seq.desc()).limit(1)).first()
            if row is not None and (last is None or row.seq > last[0]):
                last = (int(row.seq), str(row.event_key), row.ts)
    return ResumePoint(
        db_last_key=None if last is None else last[1],
        db_last_ts=None if last is None else last[2],
        db_orders=load_open_orders(engine, bot_instance_id),
        db_positions=load_positions(engine, bot_instance_id),
        state=None if state_file is None else state_file.load(),
    )


class CrashRecovery:
    """Check a restarted paper run against where the previous run stopped; see the module
    docstring. Call `before(e)` and `after(e)` around `book.apply(e)` for every event, and
    `end()` when the run ends."""

    def __init__(
        self,
        point: ResumePoint,
        book: PaperBrokerState,
        *,
        emit: Callable[[Event], None],
        on_refuse: Callable[[ReconciliationMismatch], None] | None = None,
    ) -> None:
        self.point = point
        self.book = book
        self.emit = emit
        self.on_refuse = on_refuse
        self.pending = point.active
        self._db_reached = point.db_last_key is None
        self._state_checked = point.state is None or point.state.count == 0
        self._state_mismatches: list[Mismatch] = []
        self.lost: list[Event] = []  # re-produced events the database never received
        self.result: Reconciliation | None = None
        self.error: ReconciliationMismatch | None = None

    @property
    def replaying_recorded(self) -> bool:
        """True while the re-run is still before the last event the database holds: the events
        it produces now are ones the previous run already recorded (and published)."""
        return self.pending and not self._db_reached

    def before(self, event: Event) -> None:
        """An event later than the resume point: the point has passed, check before it."""
        ts = self.point.ts
        if self.pending and isinstance(event, COUNTED) and ts is not None and event.ts > ts:
            self._finish()

    def after(self, event: Event) -> None:
        if not self.pending or not isinstance(event, COUNTED):
            return
        if self._db_reached:
            self.lost.append(event)
        elif event_key(event) == self.point.db_last_key:
            self._db_reached = True
        saved = self.point.state
        if not self._state_checked and saved is not None and self.book.count == saved.count:
            self._state_checked = True
            self._state_mismatches = self._compare_saved(saved)
        if self._db_reached and self._state_checked:
            self._finish()

    def end(self) -> None:
        """The run ended: check now if the resume point was never reached."""
        if self.pending:
            self._finish()

    def _compare_saved(self, saved: PaperBrokerState) -> list[Mismatch]:
        n = saved.count
        if saved.last_key != self.book.last_key:
            return [
                Mismatch(
                    "BROKER_STATE_DIVERGED",
                    None,
                    None,
                    f"saved paper broker: event #{n} {str(saved.last_key)[:16]}",
                    f"re-run: event #{n} {str(self.book.last_key)[:16]}",
                )
            ]
        out = diff_books(saved, self.book, prefix="BROKER_STATE_")
        if (
            saved.cash is not None
            and self.book.cash is not None
            and not same_amount(saved.cash, self.book.cash)
        ):
            out.append(
                Mismatch(
                    "BROKER_STATE_CASH", None, None, f"cash {saved.cash}", f"cash {self.book.cash}"
                )
            )
        return out

    def _finish(self) -> None:
        self.pending = False
        point, saved = self.point, self.point.state
        mismatches = list(self._state_mismatches)
        if not self._state_checked and saved is not None:
            mismatches.append(
                Mismatch(
                    "BROKER_STATE_NOT_REACHED",
                    None,
                    None,
                    f"saved paper broker state after {saved.count} events (at {saved.last_ts})",
                    f"the restarted run moved on after {self.book.count} events",
                )
            )
        corrections: list[Correction] = []
        if not self._db_reached:
            mismatches.append(
                Mismatch(
                    "CRASH_POINT_NOT_REPRODUCED",
                    None,
                    None,
                    f"last recorded event {str(point.db_last_key)[:16]} at {point.db_last_ts}",
                    "never re-produced by the restarted run (other bars, config or fill model?)",
                )
            )
        else:
            rec = reconcile(point.db_orders, point.db_positions, self.book, unrecorded=self.lost)
            mismatches += rec.mismatches
            corrections = rec.corrections
        self.result = Reconciliation(corrections, mismatches)
        ts = self.book.last_ts or point.ts or datetime.now(UTC)
        for record in self.result.records(ts):
            self.emit(record)
        if mismatches:
            self.error = ReconciliationMismatch(mismatches)
            log.error("%s", self.error)
            if self.on_refuse is not None:
                self.on_refuse(self.error)
        else:
            log.info(
                "crash recovery: the restarted run matches the record; %d lost events restored, "
                "%d corrections",
                len(self.lost),
                len(corrections),
            )
