"""RiskController: every order passes `check` before any broker sees it, in every mode.

A denial carries an UPPER_SNAKE reason code and is published as RiskDenied; a value at
`warn_at` of its limit or more (but within it) gives a RiskWarning. Orders that only reduce
an open position are always allowed, halted or not. Equity updates (`on_equity`) track the
UTC day's first equity and the peak: a daily loss at `max_daily_loss` halts new entries until
the next UTC day, a drawdown at `max_drawdown` halts them until `resume()`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

from trading.bus import EventBus
from trading.config import RiskSection
from trading.events import Event, Halted, Resumed, RiskDenied, RiskWarning
from trading.orders import ClientOrderId, OrderSide
from trading.positions import Position

_ZERO = Decimal(0)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class OrderRequest:
    """An order as risk sees it: `price` is the expected fill price, `stop_loss` its protective stop."""

    symbol: str
    side: OrderSide
    quantity: Decimal
    price: Decimal
    stop_loss: Decimal | None = None
    client_order_id: ClientOrderId | None = None


@dataclass(frozen=True)
class Holding:
    """An open position: signed quantity and its current mark price."""

    quantity: Decimal
    mark: Decimal

    @property
    def notional(self) -> Decimal:
        return abs(self.quantity) * self.mark


@dataclass(frozen=True)
class Portfolio:
    """What `check` needs to know about the account: equity and open holdings by symbol."""

    equity: Decimal
    holdings: Mapping[str, Holding] = field(default_factory=dict)

    @classmethod
    def from_positions(
        cls, equity: Decimal, positions: Iterable[Position], marks: Mapping[str, Decimal]
    ) -> Portfolio:
        """Build a portfolio from PositionManager positions valued at `marks`."""
        return cls(
            equity,
            {p.symbol: Holding(p.quantity, marks[p.symbol]) for p in positions if p.quantity != 0},
        )


@dataclass(frozen=True)
class RiskDecision:
    allowed: bool
    reason: str | None = None
    detail: str = ""
    warnings: tuple[RiskWarning, ...] = ()

    def __bool__(self) -> bool:
        return self.allowed


def _d(value: float) -> Decimal:
    # Via str so that 0.1 from YAML is 0.1, not its binary neighbour.
    return Decimal(str(value))


class RiskController:
    """Check orders against `RiskSection` limits and halt on equity breaches."""

    def __init__(
        self,
        config: RiskSection,
        clock: Callable[[], datetime] = utc_now,
        bus: EventBus | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._bus = bus
        self._warn_at = None if config.warn_at is None else _d(config.warn_at)
        self._day: date | None = None
        self._day_start: Decimal | None = None
        self._peak: Decimal | None = None
        self._equity: Decimal | None = None
        self._daily_until: datetime | None = None
        self._halt: tuple[str, str] | None = None  # (reason, detail) until resume()
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ state

    @property
    def halted(self) -> str | None:
        """Return the reason code of the active halt, or None."""
        self._lift_daily(self._clock())
        if self._halt is not None:
            return self._halt[0]
        return "MAX_DAILY_LOSS" if self._daily_until is not None else None

    def halt(self, reason: str = "HALTED", detail: str = "") -> None:
        """Refuse every new entry until `resume()` (emergency stop, operator command)."""
        self._halt = (reason, detail)
        self._publish(Halted(ts=self._clock(), reason=reason, detail=detail))

    def resume(self, reason: str = "RESUME_COMMAND") -> None:
        """Lift a drawdown or manual halt; the drawdown is measured afresh from current equity.

        A daily-loss halt is not lifted: it ends with the UTC day.
        """
        if self._halt is None:
            return
        self._halt = None
        self._peak = self._equity
        self._warned.discard("MAX_DRAWDOWN")
        self._publish(Resumed(ts=self._clock(), reason=reason))

    def on_equity(self, ts: datetime, equity: Decimal) -> None:
        """Record the account equity at `ts`; halt on a daily-loss or drawdown breach."""
        day = ts.astimezone(timezone.utc).date()
        self._lift_daily(ts)
        if day != self._day:
            self._day, self._day_start = day, equity
            self._warned.discard("MAX_DAILY_LOSS")
        self._equity = equity
        self._peak = equity if self._peak is None else max(self._peak, equity)
        cfg = self.config
        if cfg.max_daily_loss is not None and self._day_start and self._day_start > 0:
            loss = (self._day_start - equity) / self._day_start
            if loss >= _d(cfg.max_daily_loss) and self._daily_until is None:
                self._daily_until = datetime.combine(day + timedelta(days=1), time(), timezone.utc)
                self._publish(
                    Halted(
                        ts=ts,
                        reason="MAX_DAILY_LOSS",
                        detail=f"day loss {loss:.4f}",
                        until=self._daily_until,
                    )
                )
            else:
                self._equity_warning(ts, "MAX_DAILY_LOSS", loss, _d(cfg.max_daily_loss))
        if cfg.max_drawdown is not None and self._peak > 0:
            dd = (self._peak - equity) / self._peak
            if dd >= _d(cfg.max_drawdown):
                if self._halt is None:
                    self._halt = ("MAX_DRAWDOWN", f"drawdown {dd:.4f} from peak {self._peak}")
                    self._publish(Halted(ts=ts, reason="MAX_DRAWDOWN", detail=self._halt[1]))
            else:
                self._equity_warning(ts, "MAX_DRAWDOWN", dd, _d(cfg.max_drawdown))

    # ------------------------------------------------------------------ checking

    def max_quantity(self, price: Decimal, stop: Decimal | None, equity: Decimal) -> Decimal | None:
        """Return the largest quantity `max_position_size` and `risk_per_trade` allow (None: no cap)."""
        caps: list[Decimal] = []
        if self.config.max_position_size is not None and price > 0:
            caps.append(equity * _d(self.config.max_position_size) / price)
        if self.config.risk_per_trade is not None and stop is not None and stop != price:
            caps.append(equity * _d(self.config.risk_per_trade) / abs(price - stop))
        return min(caps) if caps else None

    def check(self, request: OrderRequest, portfolio: Portfolio) -> RiskDecision:
        """Allow or deny one order; publish RiskDenied or the RiskWarnings."""
        held = portfolio.holdings.get(request.symbol)
        q = held.quantity if held is not None else _ZERO
        signed = request.side.sign * request.quantity
        if q != 0 and (q > 0) != (signed > 0) and request.quantity <= abs(q):
            return RiskDecision(True)  # reducing or closing: always allowed
        denial = self._denial(request, portfolio, q + signed)
        if isinstance(denial, RiskDecision):
            self._publish(
                RiskDenied(
                    ts=self._clock(),
                    symbol=request.symbol,
                    side=request.side,
                    quantity=request.quantity,
                    reason=denial.reason or "",
                    detail=denial.detail,
                    client_order_id=request.client_order_id,
                )
            )
            return denial
        warnings = tuple(
            RiskWarning(
                ts=self._clock(),
                control=code,
                value=value,
                limit=limit,
                fraction=value / limit,
                symbol=request.symbol,
            )
            for code, value, limit in denial
            if self._warn_at is not None and value >= self._warn_at * limit
        )
        for warning in warnings:
            self._publish(warning)
        return RiskDecision(True, warnings=warnings)

    def _denial(
        self, req: OrderRequest, pf: Portfolio, new_q: Decimal
    ) -> RiskDecision | list[tuple[str, Decimal, Decimal]]:
        """Return the first denial, or the (control, value, limit) measures for warnings."""
        halt = self.halted
        if halt is not None:
            return RiskDecision(
                False, halt, self._halt[1] if self._halt else f"until {self._daily_until}"
            )
        equity, cfg = pf.equity, self.config
        if equity <= 0:
            return RiskDecision(False, "NO_EQUITY", f"equity {equity}")
        if cfg.stop_loss_required and req.stop_loss is None:
            return RiskDecision(False, "STOP_LOSS_REQUIRED", "the order has no stop loss")
        if req.stop_loss is not None and (req.stop_loss - req.price) * req.side.sign >= 0:
            return RiskDecision(
                False,
                "INVALID_STOP_LOSS",
                f"stop {req.stop_loss} is not on the losing side of {req.price}",
            )
        measures: list[tuple[str, Decimal, Decimal]] = []
        if cfg.risk_per_trade is not None:
            if req.stop_loss is None:
                return RiskDecision(False, "RISK_PER_TRADE", "no stop loss to measure the risk")
            measures.append(
                (
                    "RISK_PER_TRADE",
                    req.quantity * abs(req.price - req.stop_loss) / equity,
                    _d(cfg.risk_per_trade),
                )
            )
        if cfg.max_position_size is not None:
            measures.append(
                ("MAX_POSITION_SIZE", abs(new_q) * req.price / equity, _d(cfg.max_position_size))
            )
        others = {s: h for s, h in pf.holdings.items() if s != req.symbol and h.quantity != 0}
        if (
            cfg.max_positions is not None
            and pf.holdings.get(req.symbol, Holding(_ZERO, _ZERO)).quantity == 0
        ):
            measures.append(("MAX_POSITIONS", Decimal(len(others) + 1), Decimal(cfg.max_positions)))
        exposure = abs(new_q) * req.price
        gross = exposure + sum((h.notional for h in others.values()), _ZERO)
        if cfg.max_concentration is not None and others and gross > 0:
            measures.append(("POSITION_CONCENTRATION", exposure / gross, _d(cfg.max_concentration)))
        if cfg.max_leverage is not None:
            measures.append(("LEVERAGE_LIMIT", gross / equity, _d(cfg.max_leverage)))
        for code, value, limit in measures:
            if value > limit:
                return RiskDecision(False, code, f"{value:.6g} > limit {limit}")
        return measures

    # ------------------------------------------------------------------ internals

    def _lift_daily(self, now: datetime) -> None:
        if self._daily_until is not None and now >= self._daily_until:
            self._daily_until = None
            self._publish(Resumed(ts=now.astimezone(timezone.utc), reason="NEW_TRADING_DAY"))

    def _equity_warning(self, ts: datetime, control: str, value: Decimal, limit: Decimal) -> None:
        if self._warn_at is None or value < self._warn_at * limit:
            self._warned.discard(control)  # re-arm once the value is back under the threshold
            return
        if control not in self._warned:
            self._warned.add(control)
            self._publish(
                RiskWarning(
                    ts=ts, control=control, value=value, limit=limit, fraction=value / limit
                )
            )

    def _publish(self, event: Event) -> None:
        if self._bus is not None:
            self._bus.publish(event)
