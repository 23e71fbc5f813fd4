"""TimeBasedExitMixin: close after N bars, after a duration, or at a daily session close."""

from __future__ import annotations

import re
from typing import Self

import numpy as np
from pydantic import Field, field_validator, model_validator

from strategy.mixins.base import Bars, ExitMixin, ExitParams, ExitPlan, OpenTrade
from strategy.registry import register
from trading.data.timeframes import timeframe_seconds

_NS = 1_000_000_000
_DAY = 86_400 * _NS
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


@register
class TimeBasedExitMixin(ExitMixin):
    """Ask for a market exit (filled at the next bar's open) once the position is old enough.

    Bars are labelled by their open time; a bar's close time is its open time plus the bar
    length (the smallest spacing between consecutive bars seen so far). After the close of
    bar i in a position entered (filled) at bar e, opened at time T:

    * x_max_bars = N: exit when i - e + 1 >= N, so the exit fills at the open of bar e + N
      (bars_held = N) (`time_exit`);
    * x_max_duration = D: exit when close_time(i) - T >= D: the position is out at the first
      open at least D after the entry (`time_exit`);
    * x_session_close = "HH:MM" (UTC): with S the first HH:MM strictly after T, exit when
      close_time(i) >= S: at the close of the bar that reaches the session close (or the
      first bar after it, across a data gap), filled at the next open (`session_close`).

    At least one must be set; `time_exit` wins when both reasons apply on one bar.
    """

    description = "Close after a number of bars, a duration, or at a daily UTC session close."

    class Params(ExitParams):
        x_max_bars: int | None = Field(
            None, ge=1, description="Bars held at most (from the entry fill)."
        )
        x_max_duration: str | None = Field(
            None, description="Time held at most, as a timeframe string (e.g. 36h, 90m, 2d)."
        )
        x_session_close: str | None = Field(
            None, description="Daily session close 'HH:MM' in UTC: close positions when reached."
        )

        @field_validator("x_max_duration")
        @classmethod
        def _duration(cls, v: str | None) -> str | None:
            if v is not None:
                timeframe_seconds(v)  # raises ValueError naming the value
            return v

        @field_validator("x_session_close")
        @classmethod
        def _hhmm(cls, v: str | None) -> str | None:
            if v is not None and not _HHMM.match(v):
                raise ValueError(f"invalid session close {v!r}: use HH:MM in UTC (e.g. 21:00)")
            return v

        @model_validator(mode="after")
        def _one_rule(self) -> Self:
            if (self.x_max_bars, self.x_max_duration, self.x_session_close) == (None, None, None):
                raise ValueError("set at least one of x_max_bars, x_max_duration, x_session_close")
            return self

    def prepare(self, bars: Bars) -> None:
        t = bars.time.astype("datetime64[ns]").astype(np.int64)
        # Bar length = smallest spacing seen up to each bar (gaps only widen spacings); causal.
        step = np.zeros_like(t)
        if len(t) > 1:
            step[1:] = np.minimum.accumulate(np.diff(t))
        self.open_ns = t.tolist()
        self.close_ns = (t + step).tolist()
        p = self.p
        self.max_ns = timeframe_seconds(p.x_max_duration) * _NS if p.x_max_duration else None
        if p.x_session_close:
            hh, mm = p.x_session_close.split(":")
            self.session_ns: int | None = (int(hh) * 3600 + int(mm) * 60) * _NS
        else:
            self.session_ns = None

    def extend(self, bars: Bars, start: int) -> None:
        """Append the new bars' times; the smallest spacing so far is carried, not recomputed."""
        if start < 2:  # bar 0 has no spacing yet to carry
            self.prepare(bars)
            return
        t = bars.time[start - 1 :].astype("datetime64[ns]").astype(np.int64)
        seen = self.close_ns[start - 1] - self.open_ns[start - 1]
        step = np.minimum.accumulate(np.concatenate([[seen], np.diff(t)]))[1:]
        self.open_ns.extend(t[1:].tolist())
        self.close_ns.extend((t[1:] + step).tolist())

    def on_bar(self, trade: OpenTrade, i: int) -> ExitPlan:
        plan = ExitPlan(trade.stop, trade.stop_reason, trade.take_profit, trade.take_profit_reason)
        e = trade.entry_index
        if e is None:
            return plan
        p, opened, closes_at = self.p, self.open_ns[e], self.close_ns[i]
        if (p.x_max_bars is not None and i - e + 1 >= p.x_max_bars) or (
            self.max_ns is not None and closes_at - opened >= self.max_ns
        ):
            plan.exit_now = "time_exit"
        elif self.session_ns is not None:
            session = opened - opened % _DAY + self.session_ns
            if session <= opened:
                session += _DAY
            if closes_at >= session:
                plan.exit_now = "session_close"
        return plan
