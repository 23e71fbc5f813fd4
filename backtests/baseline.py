"""The rsi_bb_atr rules written as a plain backtrader strategy: the benchmark baseline.

Built-in indicators (RSI, BollingerBands, ATR), the stock PandasData feed, `buy_bracket`
for the entry, and cancel-and-resend to move the stop (stock backtrader has no order
amend): the way a backtrader user writes it. It runs on atf's SimBroker (BackBroker with
the fill model of docs/backtesting.md) so that both engines see identical fills and must
produce identical trades; what differs is the feed, the indicators, the strategy loop and
the order handling.
"""

from __future__ import annotations

from typing import Any

import backtrader as bt


class PlainRsiBbAtr(bt.Strategy):
    params = (
        ("rsi_period", 14),
        ("oversold", 30.0),
        ("bb_period", 20),
        ("bb_dev", 2.0),
        ("cooldown", 5),
        ("atr_period", 14),
        ("sl_mult", 2.0),
        ("tp_mult", 3.0),
        ("be_trigger", 1.0),
        ("percent", 0.1),
        ("max_percent", 1.0),
        ("max_position", 0.2),
        ("risk_per_trade", 0.02),
    )

    @classmethod
    def params_from(cls, cfg: Any) -> dict[str, Any]:
        """Map a BotConfig of the rsi_bb_atr shape to this strategy's params; refuse any other shape.

        The baseline implements one rule set; anything it does not implement would make the
        "same trades" check compare different bots.
        """
        s, risk = cfg.strategy, cfg.risk_management
        sizing = s.resolved_sizing()
        if [m.name for m in s.entry_mixins] != ["RSIOrBBEntryMixin"] or [
            m.name for m in s.exit_mixins
        ] != ["AdvancedATRExitMixin"]:
            raise ValueError(
                "the plain baseline implements RSIOrBBEntryMixin + AdvancedATRExitMixin only"
            )
        e, x = s.entry_mixins[0].parameters, s.exit_mixins[0].parameters
        unsupported = {
            "direction": s.direction != "long",
            "sizing": sizing.method != "percent_equity" or bool(sizing.lot_size),
            "x_trailing_enabled": not x.get("x_trailing_enabled", True),
            "x_breakeven_enabled": not x.get("x_breakeven_enabled", True),
            "x_breakeven_offset": bool(x.get("x_breakeven_offset", 0.0)),
            "x_trail_multiplier": x.get("x_trail_multiplier") is not None,
            "x_trail_use_current_atr": bool(x.get("x_trail_use_current_atr", False)),
            "x_partial_tp_multiplier": bool(x.get("x_partial_tp_multiplier", 0.0)),
            "x_tp_multiplier": x.get("x_tp_multiplier", 3.0) <= 0,
        }
        bad = [k for k, v in unsupported.items() if v]
        if bad:
            raise ValueError(f"the plain baseline does not implement: {', '.join(bad)}")
        return {
            "rsi_period": e.get("e_rsi_period", 14),
            "oversold": e.get("e_rsi_oversold", 30.0),
            "bb_period": e.get("e_bb_period", 20),
            "bb_dev": e.get("e_bb_dev", 2.0),
            "cooldown": e.get("e_cooldown_bars", 0),
            "atr_period": x.get("x_atr_period", 14),
            "sl_mult": x.get("x_sl_multiplier", 2.0),
            "tp_mult": x.get("x_tp_multiplier", 3.0),
            "be_trigger": x.get("x_breakeven_trigger", 1.0),
            "percent": sizing.percent,
            "max_percent": sizing.max_percent,
            "max_position": risk.max_position_size
            if risk.max_position_size is not None
            else float("inf"),
            "risk_per_trade": risk.risk_per_trade
            if risk.risk_per_trade is not None
            else float("inf"),
        }

    def __init__(self) -> None:
        self.rsi = bt.ind.RSI(self.data.close, period=self.p.rsi_period)
        self.bb = bt.ind.BollingerBands(
            self.data.close, period=self.p.bb_period, devfactor=self.p.bb_dev
        )
        self.atr = bt.ind.ATR(self.data, period=self.p.atr_period)
        # (entry bar, exit bar, entry price, exit price, quantity, exit reason)
        self.trades_out: list[tuple[int, int, float, float, float, str]] = []
        self.entry_order: bt.Order | None = None
        self.stop_order: bt.Order | None = None
        self.tp_order: bt.Order | None = None
        self.last_exit = -(10**9)
        self.in_trade = False
        # The open trade: set when the entry is sent or fills.
        self.atr0 = self.stop_px = self.target = 0.0
        self.entry_price = self.qty = self.best = 0.0
        self.entry_i = 0
        self.stop_reason = "stop_loss"
        self.be_done = False

    def next(self) -> None:
        i = len(self.data) - 1
        if self.in_trade and self.entry_order is None:
            self._manage(i)
            return
        if self.in_trade or self.entry_order is not None or i >= self.data.buflen() - 1:
            return
        if i - self.last_exit < self.p.cooldown:
            return
        close = self.data.close[0]
        if not (self.rsi[0] < self.p.oversold or close <= self.bb.bot[0]):
            return
        atr = self.atr[0]
        stop, target = close - self.p.sl_mult * atr, close + self.p.tp_mult * atr
        equity = self.broker.getvalue()
        qty = equity * self.p.percent / close
        qty = min(qty, equity * self.p.max_percent / close, equity * self.p.max_position / close)
        qty = min(qty, equity * self.p.risk_per_trade / (close - stop))
        self.atr0, self.stop_px, self.target = atr, stop, target
        self.stop_reason = "stop_loss"
        self.be_done = False
        self.entry_order, s, t = self.buy_bracket(
            size=qty, exectype=bt.Order.Market, stopprice=stop, limitprice=target
        )
        self.stop_order, self.tp_order = s, t
        self.in_trade = True

    def _manage(self, i: int) -> None:
        self.best = max(self.best, self.data.high[0])
        stop, reason = self.stop_px, self.stop_reason
        if not self.be_done and self.best - self.entry_price >= self.p.be_trigger * self.atr0:
            self.be_done = True
            if self.entry_price > stop:
                stop, reason = self.entry_price, "breakeven_stop"
        trail = self.best - self.p.sl_mult * self.atr0
        if trail > stop:
            stop, reason = trail, "trailing_stop"
        self.stop_reason = reason
        if stop != self.stop_px:
            self.stop_px = stop
            self.broker.cancel(self.stop_order)  # cancels the target with it
            self.stop_order = self.sell(size=self.qty, exectype=bt.Order.Stop, price=stop)
            self.tp_order = self.sell(
                size=self.qty, exectype=bt.Order.Limit, price=self.target, oco=self.stop_order
            )

    def notify_order(self, order: bt.Order) -> None:
        if order.status != order.Completed:
            if (
                self.entry_order is not None
                and order.ref == self.entry_order.ref
                and not order.alive()
            ):
                self.entry_order, self.in_trade = None, False
            return
        i = len(self.data) - 1
        if self.entry_order is not None and order.ref == self.entry_order.ref:
            self.entry_order = None
            self.entry_price, self.qty, self.entry_i = (
                order.executed.price,
                abs(order.executed.size),
                i,
            )
            self.best = self.entry_price
        elif (
            self.stop_order is not None
            and self.tp_order is not None
            and (order.ref in (self.stop_order.ref, self.tp_order.ref))
        ):
            reason = self.stop_reason if order.ref == self.stop_order.ref else "take_profit"
            self.trades_out.append(
                (self.entry_i, i, self.entry_price, order.executed.price, self.qty, reason)
            )
            self.in_trade = False
            self.last_exit = i
