"""The rsi_bb_atr rules written as a plain backtrader strategy: the benchmark baseline.

Built-in indicators (RSI, BollingerBands, ATR) and the stock PandasData feed, the way a
backtrader user writes it. It uses atf's SimBroker (stock BackBroker plus bracket children
live on the entry bar) so that both runs see identical fills and must produce identical
trades; what differs is the feed, the indicators and the strategy loop.
"""

from __future__ import annotations

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
        ("max_position", 0.2),
        ("risk_per_trade", 0.02),
    )

    def __init__(self) -> None:
        self.rsi = bt.ind.RSI(self.data.close, period=self.p.rsi_period)
        self.bb = bt.ind.BollingerBands(self.data.close, period=self.p.bb_period, devfactor=self.p.bb_dev)
        self.atr = bt.ind.ATR(self.data, period=self.p.atr_period)
        self.trades_out: list[tuple] = []
        self.entry_order = self.stop_order = self.tp_order = None
        self.last_exit = -(10**9)
        self.in_trade = False

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
        qty = min(qty, equity / close, equity * self.p.max_position / close)
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
            self.tp_order = self.sell(size=self.qty, exectype=bt.Order.Limit, price=self.target, oco=self.stop_order)

    def notify_order(self, order: bt.Order) -> None:
        if order.status != order.Completed:
            if self.entry_order is not None and order.ref == self.entry_order.ref and not order.alive():
                self.entry_order, self.in_trade = None, False
            return
        i = len(self.data) - 1
        if self.entry_order is not None and order.ref == self.entry_order.ref:
            self.entry_order = None
            self.entry_price, self.qty, self.entry_i = order.executed.price, abs(order.executed.size), i
            self.best = self.entry_price
        elif order.ref == self.stop_order.ref or order.ref == self.tp_order.ref:
            reason = self.stop_reason if order.ref == self.stop_order.ref else "take_profit"
            self.trades_out.append((self.entry_i, i, self.entry_price, order.executed.price, self.qty, reason))
            self.in_trade = False
            self.last_exit = i
