"""Message texts: one short line per event, symbol first, numbers rounded for a phone.

`render(event)` returns the category and the text of an event, or None for events that are
not notified. Reports (`report_message`) and unusual trades (`unusual_message`) are built
here too, so every word a trader reads lives in this file.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from trading.events import (
    BotStarted,
    BotStopped,
    Event,
    Halted,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    Resumed,
    RiskDenied,
    RiskWarning,
    TradeClosed,
    TradeOpened,
)
from trading.status import StatusSnapshot, fmt_num, fmt_price, fmt_qty


@dataclass(frozen=True)
class Message:
    """One notification as the channels send it."""

    text: str
    category: str
    silent: bool = False
    mergeable: bool = True
    chat_id: int | None = None  # a reply to one chat; None: every configured recipient
    subject: str | None = None  # email subject; default: the first line
    html: str | None = None  # email body; default: the text, escaped
    photo: bytes | None = None  # PNG (the equity chart of a report)

    def merged(self, other: Message, sep: str = "\n") -> Message:
        """Return this message with `other` appended (loud if either is loud)."""
        return replace(self, text=self.text + sep + other.text, silent=self.silent and other.silent,
                       subject=None, html=None)


def _sig(x: Decimal | float) -> str:
    """Up to 4 significant digits, no exponent for everyday sizes."""
    return f"{float(x):.4g}"


def _pct(x: float) -> str:
    return f"{x:+.2f}%"


def trade_pnl(e: TradeClosed) -> tuple[float, float]:
    """Return the net pnl and its percent of the entry notional."""
    pnl = float(e.realised_pnl - e.fees)
    notional = float(e.entry_price * e.quantity)
    return pnl, (pnl / notional * 100.0 if notional else 0.0)


def _opened(e: TradeOpened) -> str:
    icon = "🟢" if e.side.value == "long" else "🔴"
    return f"{e.symbol} {icon} opened {e.side.value.upper()} {fmt_qty(float(e.quantity))} @ {fmt_price(float(e.entry_price))}"


def _closed(e: TradeClosed) -> str:
    pnl, pct = trade_pnl(e)
    reason = getattr(e, "exit_reason", "") or ""
    icon = "✅" if pnl > 0 else "❌" if pnl < 0 else "➖"
    return (f"{e.symbol} {icon} closed {e.side.value.upper()} {fmt_num(pnl, sign=True)} ({_pct(pct)})"
            + (f" · {reason}" if reason else "")
            + f" · {fmt_price(float(e.entry_price))} → {fmt_price(float(e.exit_price))}")


def _filled(e: OrderFilled) -> str:
    return (f"{e.symbol} 💱 {e.side.value.upper()} filled {fmt_qty(float(e.filled_qty))} @ "
            f"{fmt_price(float(e.avg_price))} · fee {fmt_num(float(e.fee))}")


def _rejected(e: OrderRejected) -> str:
    return f"{e.symbol} ❌ order rejected: {e.reason} · {e.client_order_id}"


def _expired(e: OrderExpired) -> str:
    return f"{e.symbol} ⌛ order expired · {e.client_order_id} · filled {fmt_qty(float(e.filled_qty))}"


def _denied(e: RiskDenied) -> str:
    detail = f" — {e.detail}" if e.detail else ""
    return f"{e.symbol} ⛔ {e.side.value.upper()} {fmt_qty(float(e.quantity))} refused: {e.reason}{detail}"


def _warning(e: RiskWarning) -> str:
    head = f"{e.symbol} " if e.symbol else ""
    return (f"{head}⚠️ {e.control} at {float(e.fraction) * 100:.0f}% of its limit "
            f"({_sig(e.value)} of {_sig(e.limit)})")


def _halted(e: Halted) -> str:
    until = f" · until {e.until:%Y-%m-%d %H:%M} UTC" if e.until else " · until resumed"
    return f"🛑 trading halted: {e.reason}" + (f" — {e.detail}" if e.detail else "") + until


def _resumed(e: Resumed) -> str:
    return f"▶️ trading resumed: {e.reason}"


def _started(e: BotStarted) -> str:
    return f"🚀 {e.bot} started ({e.mode})"


def _stopped(e: BotStopped) -> str:
    return f"⏹ {e.bot} stopped: {e.reason or 'stop'}"


# Events that events.py does not define yet are rendered by class name once it does
# (docs/notifications.md lists the fields read).
def _connection_lost(e: Any) -> str:
    detail = getattr(e, "detail", "")
    return f"📡 connection lost: {getattr(e, 'venue', '?')}" + (f" — {detail}" if detail else "")


def _connection_restored(e: Any) -> str:
    down = getattr(e, "downtime", None)
    took = f" after {_duration(down)}" if isinstance(down, timedelta) else ""
    return f"📶 connection restored: {getattr(e, 'venue', '?')}{took}"


def _error(e: Any) -> str:
    return f"💥 error: {getattr(e, 'error', '') or getattr(e, 'detail', '') or type(e).__name__}"


_BY_TYPE: tuple[tuple[type[Event], str, Any], ...] = (
    (TradeOpened, "position_opened", _opened),
    (TradeClosed, "position_closed", _closed),
    (OrderFilled, "order_filled", _filled),
    (OrderRejected, "order_failed", _rejected),
    (OrderExpired, "order_failed", _expired),
    (RiskDenied, "risk_alerts", _denied),
    (RiskWarning, "risk_alerts", _warning),
    (Halted, "risk_alerts", _halted),
    (Resumed, "risk_alerts", _resumed),
    (BotStarted, "system_status", _started),
    (BotStopped, "system_status", _stopped),
)
_BY_NAME = {
    "ConnectionLost": ("system_status", _connection_lost),
    "ConnectionRestored": ("system_status", _connection_restored),
    "BotError": ("system_status", _error),
    "ErrorOccurred": ("system_status", _error),
}


def render(event: Event) -> tuple[str, str] | None:
    """Return (category, text) for an event that is notified, else None."""
    for cls, category, fn in _BY_TYPE:
        if isinstance(event, cls):
            return category, fn(event)
    named = _BY_NAME.get(type(event).__name__)
    if named is not None:
        return named[0], named[1](event)
    return None


def unusual_message(e: TradeClosed, sigmas: float, window: int) -> str:
    pnl, pct = trade_pnl(e)
    kind = "WIN" if pnl > 0 else "LOSS"
    return (f"{e.symbol} 🚨 unusual {kind} {fmt_num(pnl, sign=True)} ({_pct(pct)}) · "
            f"{sigmas:.1f}σ of the last {window} trades")


def _duration(d: timedelta) -> str:
    s = int(d.total_seconds())
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# --------------------------------------------------------------------------- reports


def report_message(kind: str, snap: StatusSnapshot, end: datetime, chart: bytes | None = None,
                   tz: tzinfo = UTC) -> Message:
    """Build the daily or weekly report of the period ending at `end` (text, HTML and chart).

    The period is the day (or 7 days) before `end`; its dates are shown in `tz`.
    """
    days = 1 if kind == "daily" else 7
    start = (end.astimezone(tz) - timedelta(days=days)).astimezone(UTC)
    trades = [t for t in snap.trades if start <= t.exit_time < end]
    pnl = math.fsum(t.pnl for t in trades)
    wins = sum(t.pnl > 0 for t in trades)
    eq = snap.equity_series()
    before = eq[eq.index < start]
    base = float(before.iloc[-1]) if len(before) else snap.initial_cash
    change = (pnl / base * 100.0) if base else None
    window = eq[(eq.index >= start) & (eq.index < end)]
    dd = None
    if len(window):
        peak = window.cummax()
        dd = float(((peak - window) / peak).max() * 100.0)
    best = max(trades, key=lambda t: t.pnl, default=None)
    worst = min(trades, key=lambda t: t.pnl, default=None)
    first, last = start.astimezone(tz), (end - timedelta(seconds=1)).astimezone(tz)
    period = f"{first:%Y-%m-%d}" if days == 1 else f"{first:%Y-%m-%d} – {last:%Y-%m-%d}"
    title = f"📊 {kind.capitalize()} report · {snap.bot or 'bot'} · {period}"
    rows = [
        ("PnL", f"{fmt_num(pnl, sign=True)} ({fmt_num(change, sign=True)}%)"),
        ("Trades", f"{len(trades)} ({wins}W/{len(trades) - wins}L)" if trades else "0"),
        ("Balance", fmt_num(snap.balance)),
        ("Open positions", str(len(snap.positions))),
    ]
    if best is not None and worst is not None:
        extremes = f"{best.symbol} {fmt_num(best.pnl, sign=True)} / {worst.symbol} {fmt_num(worst.pnl, sign=True)}"
        rows.append(("Best / worst", extremes))
    rows.append(("Max drawdown", f"{fmt_num(dd)}%"))
    if snap.halted:
        rows.append(("Halted", snap.halt_reason))
    text = title + "\n" + "\n".join(f"{k}: {v}" for k, v in rows)
    cells = "".join(f"<tr><th align='left'>{html.escape(k)}</th><td align='right'>{html.escape(v)}</td></tr>"
                    for k, v in rows)
    body = (f"<html><body><h2>{html.escape(title)}</h2><table cellpadding='4'>{cells}</table>"
            + ("<p>Equity chart attached (equity.png).</p>" if chart else "") + "</body></html>")
    return Message(text=text, category="performance_reports", mergeable=False,
                   subject=f"[atf] {kind} report {snap.bot} {period}", html=body, photo=chart)
