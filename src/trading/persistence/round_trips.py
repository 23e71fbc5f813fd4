"""Paper and live round trips in `trades`: inserted open on TradeOpened, closed on TradeClosed.

A batch reads the trades it needs once (`TradeBook.load`: those its events name and the open
ones of its symbols) and writes them at its end, one statement per kind (`TradeBook.flush`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, or_, select
from sqlalchemy.engine import Connection

from trading.events import TradeClosed, TradeOpened
from trading.persistence.models import FillRecord, OrderRecord, Trade, table
from trading.persistence.sql import fetch, full_rows, insert_many, update_many

if TYPE_CHECKING:
    from trading.persistence.audit import AuditBatch

TRADES = table(Trade)
FILLS = table(FillRecord)
ORDERS = table(OrderRecord)

#: exit_reason of a trade closed by an order of this role (when the event does not say).
EXIT_REASONS = {
    "stop_loss": "stop_loss",
    "take_profit": "take_profit",
    "exit": "exit_signal",
    "entry": "reversal",
}
_KEY = ("bot_instance_id", "trade_key")
_TRADES_OF = select(TRADES.c.id, TRADES.c.trade_key, TRADES.c.status, TRADES.c.symbol).where(
    TRADES.c.bot_instance_id == bindparam("bot"),
    or_(
        TRADES.c.trade_key.in_(bindparam("keys", expanding=True)),
        and_(TRADES.c.status == "open", TRADES.c.symbol.in_(bindparam("symbols", expanding=True))),
    ),
)


#: The bot's latest stored fills of ``:symbol`` up to ``:ts``, newest first (one index scan).
_RECENT_FILLS = (
    select(FILLS.c.ts, FILLS.c.id, FILLS.c.client_order_id)
    .where(
        FILLS.c.bot_instance_id == bindparam("bot"),
        FILLS.c.symbol == bindparam("symbol"),
        FILLS.c.ts <= bindparam("ts", type_=FILLS.c.ts.type),
    )
    .order_by(FILLS.c.ts.desc(), FILLS.c.id.desc())
)
_PAGE = 20
#: The first page, built once: a statement built per call costs SQLAlchemy its cache key.
_FIRST_PAGE = _RECENT_FILLS.limit(_PAGE)


class TradeBook:
    """The trades of one bot that a batch reads and writes, kept until `flush`.

    A trade is known as ``{"order", "status", "symbol"}`` (`order` sorts stored rows by id,
    before the batch's new ones) or None (no such trade).
    """

    def __init__(self, conn: Connection, bot_instance_id: int) -> None:
        self.conn = conn
        self.bot_id = bot_instance_id
        self._rows: dict[str, dict[str, Any] | None] = {}
        self._open_symbols: set[str] = set()  # every open trade of these is in _rows
        self._new: dict[str, dict[str, Any]] = {}
        self._updates: dict[str, dict[str, Any]] = {}

    def load(self, symbols: Iterable[str] = (), keys: Iterable[str] = ()) -> None:
        """Read, in one query, the trades `keys` and the open trades of `symbols` not read yet."""
        wanted_symbols = sorted(set(symbols) - self._open_symbols)
        wanted_keys = sorted(set(keys) - self._rows.keys())
        if not wanted_symbols and not wanted_keys:
            return
        params = {"bot": self.bot_id, "keys": wanted_keys, "symbols": wanted_symbols}
        for r in fetch(self.conn, _TRADES_OF, params):
            if r.trade_key not in self._rows:
                self._rows[r.trade_key] = {
                    "order": (0, r.id),
                    "status": r.status,
                    "symbol": r.symbol,
                }
        for key in wanted_keys:
            self._rows.setdefault(key, None)
        self._open_symbols.update(wanted_symbols)

    def get(self, key: str) -> dict[str, Any] | None:
        if key not in self._rows:
            self.load(keys=[key])
        return self._rows[key]

    def announced(self, symbol: str, previous: str | None) -> str | None:
        """Return the newest open trade of `symbol` other than `previous` (a TradeOpened's)."""
        self.load(symbols=[symbol])
        found = [
            (row["order"], key)
            for key, row in self._rows.items()
            if row is not None
            and row["status"] == "open"
            and row["symbol"] == symbol
            and key != previous
        ]
        return max(found)[1] if found else None

    def insert(self, values: dict[str, Any]) -> None:
        """Insert the trade `values` unless its key is taken (a replay finds it there)."""
        key = values["trade_key"]
        if self.get(key) is not None:
            return
        self._new[key] = values
        order = (1, len(self._new))
        self._rows[key] = {"order": order, "status": values["status"], "symbol": values["symbol"]}

    def update(self, key: str, values: dict[str, Any]) -> None:
        """Set `values` on the known trade `key`."""
        row = self._rows[key]
        assert row is not None
        row["status"] = values.get("status", row["status"])
        target = self._new[key] if key in self._new else self._updates.setdefault(key, {})
        target.update(values)

    def flush(self) -> None:
        """Write the batch's new trades, then its changes to stored ones."""
        insert_many(self.conn, TRADES, full_rows(TRADES, self._new.values()), _KEY)
        update_many(
            self.conn,
            TRADES,
            [
                {"bot_instance_id": self.bot_id, "trade_key": k, **v}
                for k, v in self._updates.items()
            ],
            _KEY,
        )
        self._new.clear()
        self._updates.clear()


def open_trade(batch: AuditBatch, e: TradeOpened) -> None:
    """Insert the open trade (a replay finds it there) and name the position's round trip."""
    batch.trades.insert(
        {
            "trade_type": batch.bot.mode,
            "bot_name": batch.bot.name,
            "bot_instance_id": batch.bot_id,
            "trade_key": e.trade_id,
            "symbol": e.symbol,
            "side": e.side.value,
            "entry_time": e.ts,
            "entry_price": e.entry_price,
            "quantity": e.quantity,
            "fees": 0,
            "status": "open",
            "entry_tag": getattr(e, "entry_tag", None),
            "strategy": getattr(e, "strategy", None) or batch.bot.strategy,
        }
    )
    batch.positions.adopt_trade_key(e.symbol, e.trade_id, e.ts)


def close_trade(batch: AuditBatch, e: TradeClosed) -> None:
    """Close the open trade `e.trade_id` (or insert it closed); a closed one is left alone."""
    row = batch.trades.get(e.trade_id)
    if row is not None and row["status"] == "closed":
        return
    pnl = e.realised_pnl - e.fees
    basis = e.entry_price * e.quantity
    values: dict[str, Any] = {
        "status": "closed",
        "exit_time": e.ts,
        "exit_price": e.exit_price,
        "entry_price": e.entry_price,
        "quantity": e.quantity,
        "gross_pnl": e.realised_pnl,
        "fees": e.fees,
        "pnl": pnl,
        "pnl_pct": float(pnl / basis * 100) if basis else None,
        "exit_reason": getattr(e, "exit_reason", None) or _exit_reason(batch, e),
    }
    for name in ("entry_tag", "strategy"):
        if getattr(e, name, None):
            values[name] = getattr(e, name)
    if row is not None:
        batch.trades.update(e.trade_id, values)
        return
    entry_time: datetime = batch.positions.opened_at(e.symbol, e.trade_id) or e.ts
    values.setdefault("strategy", batch.bot.strategy)
    batch.trades.insert(
        {
            "trade_type": batch.bot.mode,
            "bot_name": batch.bot.name,
            "bot_instance_id": batch.bot_id,
            "trade_key": e.trade_id,
            "symbol": e.symbol,
            "side": e.side.value,
            "entry_time": entry_time,
            **values,
        }
    )


def _exit_reason(batch: AuditBatch, e: TradeClosed) -> str | None:
    """Name the exit by the role of the order whose fill last traded the symbol (up to e.ts).

    Fills of orders never submitted do not count. The batch's own fills come after every
    stored one of the same ts (they get higher ids).
    """

    def known(cid: str) -> bool:
        return batch.order(cid) is not None

    last = batch.rows.last_fill(e.symbol, e.ts, known)
    after = None if last is None else last["ts"]  # a stored fill must be later to win
    params = {"bot": batch.bot_id, "symbol": e.symbol, "ts": e.ts}
    # the batch's own fill at e.ts (the usual exit) leaves no stored one later: no query
    pages = itertools.count(0, _PAGE) if after is None or after < e.ts else ()
    for skip in pages:  # pages: orders are looked up by id, no join
        if skip == 0:
            page = fetch(batch.conn, _FIRST_PAGE, params)
        else:  # a statement of this call: not one to prepare
            page = list(batch.conn.execute(_RECENT_FILLS.limit(_PAGE).offset(skip), params))
        later = [r for r in page if after is None or r.ts > after]
        batch.rows.load_orders(r.client_order_id for r in later)
        found = next((r for r in later if known(r.client_order_id)), None)
        if found is not None:
            last = {"client_order_id": found.client_order_id}
            break
        if len(later) < _PAGE:
            break
    order = None if last is None else batch.order(last["client_order_id"])
    role = None if order is None else order["role"]
    return EXIT_REASONS.get(role) if role else None
