"""One query layer over a bot: the snapshot it exposes and the answers built from it.

`StatusSnapshot` is what a bot exposes: open positions, closed trades, equity, halt state.
`StatusTracker` keeps one up to date from the bot's events (in-process: the Notifier and the
Telegram commands); `read_status(folder)` rebuilds one from the files a bot writes
(``status.json`` while running; ``result.json`` and ``state.json`` once stopped) for
`atf status`. Both front ends then call the same `answer(...)`, so they always agree.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from trading.analytics.metrics import compute_metrics
from trading.events import BotStarted, BotStopped, Event, Halted, Resumed, TradeClosed, TradeOpened

STATUS_FILE = "status.json"
QUERIES = ("status", "positions", "balance", "profit", "daily", "weekly", "trades", "performance")


@dataclass(frozen=True)
class OpenPosition:
    symbol: str
    side: str  # "long" | "short"
    quantity: float
    entry_price: float
    entry_time: datetime
    trade_id: str = ""
    stop: float | None = None
    take_profit: float | None = None


@dataclass(frozen=True)
class ClosedTrade:
    symbol: str
    side: str
    quantity: float
    entry_price: float
    exit_price: float
    entry_time: datetime
    exit_time: datetime
    pnl: float  # net of fees
    fees: float
    exit_reason: str = ""

    @property
    def pnl_pct(self) -> float:
        notional = self.entry_price * self.quantity
        return self.pnl / notional * 100.0 if notional else 0.0


@dataclass
class StatusSnapshot:
    """What a bot exposes at one moment; money in the account currency."""

    bot: str = ""
    mode: str = ""
    running: bool = False
    halted: bool = False
    halt_reason: str = ""
    stop_reason: str = ""
    started_at: datetime | None = None
    as_of: datetime | None = None
    initial_cash: float = 0.0
    positions: list[OpenPosition] = field(default_factory=list)
    trades: list[ClosedTrade] = field(default_factory=list)
    equity: list[tuple[datetime, float]] = field(default_factory=list)  # marked-to-market, if known

    @property
    def realised_pnl(self) -> float:
        return math.fsum(t.pnl for t in self.trades)

    @property
    def balance(self) -> float:
        """Last marked equity when known, else cash plus realised pnl."""
        return self.equity[-1][1] if self.equity else self.initial_cash + self.realised_pnl

    def equity_series(self) -> pd.Series:
        """Return the equity curve; without marked equity, the realised curve at exit times."""
        if self.equity:
            t, v = zip(*self.equity, strict=True)
        else:
            start = self.started_at or (self.trades[0].entry_time if self.trades else datetime.now(UTC))
            points = [(start, self.initial_cash)]
            run = self.initial_cash
            for tr in sorted(self.trades, key=lambda x: x.exit_time):
                run += tr.pnl
                points.append((max(tr.exit_time, points[-1][0]), run))
            t, v = zip(*points, strict=True)
        return pd.Series(list(v), index=pd.DatetimeIndex(list(t)).tz_convert("UTC"), dtype=float)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["equity"] = [[ts.isoformat(), v] for ts, v in self.equity]
        return _iso_dates(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StatusSnapshot:
        def ts(v: Any) -> datetime | None:
            return None if v in (None, "") else pd.Timestamp(v).tz_convert("UTC").to_pydatetime()

        return cls(
            bot=d.get("bot", ""), mode=d.get("mode", ""), running=bool(d.get("running")),
            halted=bool(d.get("halted")), halt_reason=d.get("halt_reason", ""),
            stop_reason=d.get("stop_reason", ""), started_at=ts(d.get("started_at")),
            as_of=ts(d.get("as_of")), initial_cash=float(d.get("initial_cash", 0.0)),
            positions=[OpenPosition(**{**p, "entry_time": ts(p["entry_time"])}) for p in d.get("positions", [])],
            trades=[ClosedTrade(**{**t, "entry_time": ts(t["entry_time"]), "exit_time": ts(t["exit_time"])})
                    for t in d.get("trades", [])],
            equity=[(ts(t), float(v)) for t, v in d.get("equity", [])],  # type: ignore[misc]
        )


def _iso_dates(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _iso_dates(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_iso_dates(v) for v in obj]
    return obj.isoformat() if isinstance(obj, datetime) else obj


# --------------------------------------------------------------------------- tracking


class StatusTracker:
    """Keep a `StatusSnapshot` from a bot's events; thread-safe, O(1) per event.

    `handle` suits `EventBus.subscribe(..., inline=True)`: it only updates memory. `save`
    writes ``status.json`` for `atf status`; call it off the bar thread (the Notifier does).
    """

    def __init__(self, *, bot: str = "", initial_cash: float = 0.0, path: str | Path | None = None) -> None:
        self._snap = StatusSnapshot(bot=bot, initial_cash=initial_cash)
        self._open: dict[str, OpenPosition] = {}
        self._lock = threading.Lock()
        self.path = Path(path) if path is not None else None
        self.version = 0  # bumped on every change; `save` writes only newer versions
        self._saved = -1

    def handle(self, event: Event) -> None:
        with self._lock:
            s = self._snap
            s.as_of = event.ts if s.as_of is None else max(s.as_of, event.ts)
            if isinstance(event, BotStarted):  # a new run: its own positions and trades
                self._snap = s = StatusSnapshot(bot=event.bot, mode=event.mode, running=True, started_at=event.ts,
                                                as_of=event.ts, initial_cash=s.initial_cash)
                self._open.clear()
            elif isinstance(event, BotStopped):
                s.running, s.stop_reason = False, event.reason
            elif isinstance(event, Halted):
                s.halted, s.halt_reason = True, event.reason
            elif isinstance(event, Resumed):
                s.halted, s.halt_reason = False, ""
            elif isinstance(event, TradeOpened):
                self._open[event.trade_id] = OpenPosition(
                    symbol=event.symbol, side=str(event.side.value), quantity=float(event.quantity),
                    entry_price=float(event.entry_price), entry_time=event.ts, trade_id=event.trade_id)
            elif isinstance(event, TradeClosed):
                self._close(event)
            else:
                return
            s.positions = list(self._open.values())
            self.version += 1

    def _close(self, e: TradeClosed) -> None:
        pos = self._open.get(e.trade_id)
        qty = float(e.quantity)
        if pos is not None:
            left = pos.quantity - qty
            if left > 1e-12 * max(1.0, pos.quantity):
                self._open[e.trade_id] = replace(pos, quantity=left)
            else:
                del self._open[e.trade_id]
        self._snap.trades.append(ClosedTrade(
            symbol=e.symbol, side=str(e.side.value), quantity=qty, entry_price=float(e.entry_price),
            exit_price=float(e.exit_price), entry_time=pos.entry_time if pos else e.ts, exit_time=e.ts,
            pnl=float(e.realised_pnl - e.fees), fees=float(e.fees),
            exit_reason=str(getattr(e, "exit_reason", "") or ""),
        ))

    def load_result(self, result: Any, state: dict[str, Any] | None = None) -> None:
        """Take the final trades, equity and open positions from a finished run."""
        snap = snapshot_from_result(result.to_dict(), state)
        with self._lock:
            old = self._snap
            snap.running, snap.halted, snap.halt_reason = False, old.halted, old.halt_reason
            snap.started_at, snap.stop_reason = old.started_at or snap.started_at, old.stop_reason or snap.stop_reason
            snap.mode = old.mode or snap.mode
            self._snap = snap
            self._open = {p.trade_id or p.symbol: p for p in snap.positions}
            self.version += 1

    def snapshot(self) -> StatusSnapshot:
        """Return a copy that later events do not change."""
        with self._lock:
            s = self._snap
            return replace(s, positions=list(s.positions), trades=list(s.trades), equity=list(s.equity))

    def save(self) -> bool:
        """Write ``status.json`` atomically if anything changed since the last save."""
        if self.path is None or self._saved == self.version:
            return False
        version = self.version
        snap = self.snapshot()
        from trading.analytics.report import atomic_write_bytes

        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, (json.dumps(snap.to_dict(), indent=1) + "\n").encode())
        self._saved = version
        return True


# --------------------------------------------------------------------------- reading


def snapshot_from_result(result: dict[str, Any], state: dict[str, Any] | None = None) -> StatusSnapshot:
    """Build a snapshot from ``result.json`` (and ``state.json`` for open positions)."""
    state = state or {}
    diag = result.get("diagnostics") or {}
    metrics = result.get("metrics") or {}
    conv = StatusSnapshot.from_dict
    trades = [
        {k: t[k] for k in ("symbol", "side", "quantity", "entry_price", "exit_price", "entry_time",
                           "exit_time", "pnl", "fees", "exit_reason")}
        for t in result.get("trades", []) if t.get("exit_reason") != "end_of_data"
    ]
    positions = [
        {"symbol": p["symbol"], "side": p["side"], "quantity": p["quantity"], "entry_price": p["entry_price"],
         "entry_time": p["entry_time"], "stop": p.get("stop"), "take_profit": p.get("take_profit")}
        for p in state.get("positions", [])
    ]
    return conv({
        "bot": result.get("name", state.get("bot", "")), "mode": diag.get("mode", state.get("mode", "")),
        "running": False, "halted": bool(state.get("halted")),
        "stop_reason": diag.get("stop_reason", state.get("stop_reason", "")),
        "started_at": result.get("start"), "as_of": result.get("end"),
        "initial_cash": metrics.get("initial_cash", 0.0), "positions": positions, "trades": trades,
        "equity": [[p["time"], p["value"]] for p in result.get("equity", [])],
    })


def read_status(folder: str | Path) -> StatusSnapshot:
    """Read what a bot wrote into `folder`: the newer of status.json and result.json (+ state.json)."""
    folder = Path(folder)
    live, final, state = folder / STATUS_FILE, folder / "result.json", folder / "state.json"
    candidates = [p for p in (live, final) if p.is_file()]
    if not candidates:
        raise FileNotFoundError(f"no {STATUS_FILE} or result.json in {folder}: is this a bot's output folder?")
    newest = max(candidates, key=lambda p: p.stat().st_mtime_ns)
    if newest == live:
        return StatusSnapshot.from_dict(json.loads(live.read_text(encoding="utf-8")))
    st = json.loads(state.read_text(encoding="utf-8")) if state.is_file() else None
    return snapshot_from_result(json.loads(final.read_text(encoding="utf-8")), st)


# --------------------------------------------------------------------------- answers


def fmt_num(x: float | None, digits: int = 2, sign: bool = False) -> str:
    """Round for a phone: thousands separators, fixed decimals, '—' when unknown."""
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:+,.{digits}f}" if sign else f"{x:,.{digits}f}"


def fmt_price(x: float | None) -> str:
    """Price with as many decimals as its size needs (4 significant below 1)."""
    if x is None or not math.isfinite(x):
        return "—"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.2f}"
    if a >= 1:
        return f"{x:,.4f}".rstrip("0").rstrip(".") if a < 10 else f"{x:,.2f}"
    return f"{x:.4g}" if a else "0"


def fmt_qty(x: float) -> str:
    return f"{x:,.6f}".rstrip("0").rstrip(".") or "0"


def _metrics(s: StatusSnapshot) -> dict[str, Any]:
    trades = pd.DataFrame([{
        "trade_id": i, "entry_time": t.entry_time, "exit_time": t.exit_time, "pnl": t.pnl,
        "gross_pnl": t.pnl + t.fees, "fees": t.fees, "pnl_pct": t.pnl_pct, "bars_held": 0,
        "exit_reason": t.exit_reason, "entry_tag": "",
    } for i, t in enumerate(s.trades)], columns=["trade_id", "entry_time", "exit_time", "pnl", "gross_pnl",
                                                  "fees", "pnl_pct", "bars_held", "exit_reason", "entry_tag"])
    cash = s.initial_cash if s.initial_cash > 0 else 1.0
    return compute_metrics(trades, s.equity_series(), cash)


def _status(s: StatusSnapshot, **_: Any) -> str:
    state = "running" if s.running else f"stopped ({s.stop_reason or 'not started'})"
    lines = [f"{s.bot or 'bot'} · {s.mode or '?'} · {state}"]
    if s.halted:
        lines.append(f"🛑 halted: {s.halt_reason}")
    if s.started_at:
        lines.append(f"since {s.started_at:%Y-%m-%d %H:%M} UTC")
    lines.append(f"open positions: {len(s.positions)} · closed trades: {len(s.trades)}")
    lines.append(f"realised pnl: {fmt_num(s.realised_pnl, sign=True)}")
    return "\n".join(lines)


def _positions(s: StatusSnapshot, **_: Any) -> str:
    if not s.positions:
        return "No open positions."
    rows = [f"{p.symbol} {p.side.upper()} {fmt_qty(p.quantity)} @ {fmt_price(p.entry_price)}"
            + (f" · SL {fmt_price(p.stop)}" if p.stop else "") + (f" · TP {fmt_price(p.take_profit)}" if p.take_profit else "")
            + f" · since {p.entry_time:%m-%d %H:%M}" for p in sorted(s.positions, key=lambda p: p.symbol)]
    return f"Open positions ({len(rows)}):\n" + "\n".join(rows)


def _balance(s: StatusSnapshot, **_: Any) -> str:
    change = (s.balance / s.initial_cash - 1) * 100 if s.initial_cash else None
    return (f"Balance: {fmt_num(s.balance)} ({fmt_num(change, sign=True)}%)\n"
            f"Starting cash: {fmt_num(s.initial_cash)}\nRealised pnl: {fmt_num(s.realised_pnl, sign=True)}")


def _profit(s: StatusSnapshot, **_: Any) -> str:
    if not s.trades:
        return "No closed trades yet."
    m = _metrics(s)
    return "\n".join([
        f"Profit: {fmt_num(m['total_pnl'], sign=True)} over {m['total_trades']} trades",
        f"Win rate: {fmt_num(m['win_rate'], 1)}% ({m['winning_trades']}W/{m['losing_trades']}L)",
        f"Profit factor: {fmt_num(m['profit_factor'])} · expectancy {fmt_num(m['expectancy'], sign=True)}",
        f"Best: {fmt_num(m['largest_win'], sign=True)} · worst: {fmt_num(m['largest_loss'], sign=True)}",
        f"Max drawdown: {fmt_num(m['max_drawdown_pct'])}% · fees {fmt_num(m['total_fees'])}",
    ])


def _periods(s: StatusSnapshot, now: datetime, days: int, n: int, title: str) -> str:
    def start_of(t: datetime) -> datetime:
        t = t.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return t - timedelta(days=t.weekday()) if days == 7 else t

    cur = start_of(now)
    rows = [title]
    for k in range(n):
        lo = cur - timedelta(days=days * k)
        hi = lo + timedelta(days=days)
        ts = [t for t in s.trades if lo <= t.exit_time < hi]
        pnl = math.fsum(t.pnl for t in ts)
        wins = sum(t.pnl > 0 for t in ts)
        label = f"{lo:%Y-%m-%d}" if days == 1 else f"wk {lo:%Y-%m-%d}"
        rows.append(f"{label}  {fmt_num(pnl, sign=True):>10}  {len(ts):>3} tr" + (f"  {wins}W" if ts else ""))
    return "\n".join(rows)


def _daily(s: StatusSnapshot, now: datetime, n: int | None = None, **_: Any) -> str:
    return _periods(s, now, 1, n or 7, "Daily pnl (UTC):")


def _weekly(s: StatusSnapshot, now: datetime, n: int | None = None, **_: Any) -> str:
    return _periods(s, now, 7, n or 4, "Weekly pnl (weeks from Monday, UTC):")


def _trades(s: StatusSnapshot, n: int | None = None, **_: Any) -> str:
    n = n or 10
    if not s.trades:
        return "No closed trades yet."
    last = sorted(s.trades, key=lambda t: t.exit_time)[-n:][::-1]
    rows = [f"{t.symbol} {t.side.upper()} {fmt_num(t.pnl, sign=True)} ({fmt_num(t.pnl_pct, sign=True)}%)"
            f" · {t.exit_reason or 'closed'} · {t.exit_time:%m-%d %H:%M}" for t in last]
    return f"Last {len(rows)} trades:\n" + "\n".join(rows)


def _performance(s: StatusSnapshot, **_: Any) -> str:
    if not s.trades:
        return "No closed trades yet."
    by: dict[str, list[ClosedTrade]] = {}
    for t in s.trades:
        by.setdefault(t.symbol, []).append(t)
    ranked = sorted(by.items(), key=lambda kv: -math.fsum(t.pnl for t in kv[1]))
    rows = [f"{i}. {sym} {fmt_num(math.fsum(t.pnl for t in ts), sign=True)} ({len(ts)} tr, "
            f"{fmt_num(sum(t.pnl > 0 for t in ts) / len(ts) * 100, 0)}% win)" for i, (sym, ts) in enumerate(ranked, 1)]
    return "Performance by symbol:\n" + "\n".join(rows)


_ANSWERS: dict[str, Callable[..., str]] = {
    "status": _status, "positions": _positions, "balance": _balance, "profit": _profit,
    "daily": _daily, "weekly": _weekly, "trades": _trades, "performance": _performance,
}


def reference_time(snapshot: StatusSnapshot, wall: datetime | None = None) -> datetime:
    """Return "now" for day and week answers: the wall clock live, the bot's last event otherwise.

    A replay or a stopped bot lives at its bars' time; today's wall-clock date means nothing to it.
    """
    wall = wall or datetime.now(UTC)
    return wall if snapshot.mode == "live" or snapshot.as_of is None else snapshot.as_of


def answer(query: str, snapshot: StatusSnapshot, *, wall: datetime | None = None, n: int | None = None) -> str:
    """Return the text answer to one query (see QUERIES); `n` is the count for trades/daily/weekly."""
    fn = _ANSWERS.get(query)
    if fn is None:
        raise KeyError(f"unknown query {query!r}; choose one of {', '.join(QUERIES)}")
    return fn(snapshot, now=reference_time(snapshot, wall), n=n)
