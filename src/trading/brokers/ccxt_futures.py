"""USDⓈ-M futures on a ccxt venue: the account set-up at start and the venue's positions.

* `configure_symbol`: the margin mode, then the leverage, of one traded symbol (ccxt
  `set_margin_mode` / `set_leverage`); the margin mode first, since Binance refuses to change
  it while orders or a position exist. Refusals raise `FuturesSetupError` naming the setting.
* `require_one_way`: the adapter trades one-way mode (one net position per symbol, Binance
  ``positionSide BOTH``); an account in hedge mode is refused at connect.
* `VenuePosition` / `parse_position`: a ccxt position (Binance ``positionRisk``) as the
  adapter reports it: signed size, entry and mark price, unrealised pnl, leverage. Binance's
  v3 positionRisk has no leverage field: it is the notional over the position's initial margin.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from trading.exceptions import ATFError

ZERO = Decimal(0)


class FuturesSetupError(ATFError):
    """The venue refused the futures set-up (leverage, margin mode, position mode)."""


@dataclass(frozen=True)
class VenuePosition:
    """One open position on the venue; `quantity` is signed (> 0 long, < 0 short), in base units."""

    symbol: str  # unified ccxt symbol, e.g. BTC/USDT:USDT
    market_id: str  # the venue's id, e.g. BTCUSDT
    quantity: Decimal
    entry_price: Decimal
    mark_price: Decimal | None
    unrealised_pnl: Decimal
    leverage: Decimal | None
    margin_mode: str | None
    liquidation_price: Decimal | None

    @property
    def side(self) -> str:
        return "long" if self.quantity > 0 else "short" if self.quantity < 0 else "flat"


def _dec(value: Any) -> Decimal | None:
    return None if value in (None, "") else Decimal(str(value))


def parse_position(raw: dict[str, Any], market: dict[str, Any]) -> VenuePosition:
    """A ccxt position dict as a VenuePosition (contracts times the contract size, signed by side)."""
    contracts = _dec(raw.get("contracts")) or ZERO
    size = contracts * (_dec(market.get("contractSize")) or Decimal(1))
    sign = -1 if raw.get("side") == "short" else 1
    info = raw.get("info") or {}
    leverage = _dec(raw.get("leverage"))
    if leverage is None:
        notional, margin = _dec(info.get("notional")), _dec(info.get("positionInitialMargin"))
        if notional and margin:
            leverage = (abs(notional) / margin).quantize(Decimal("0.01"))
    return VenuePosition(
        symbol=raw["symbol"], market_id=market["id"], quantity=sign * size,
        entry_price=_dec(raw.get("entryPrice")) or ZERO, mark_price=_dec(raw.get("markPrice")),
        unrealised_pnl=_dec(raw.get("unrealizedPnl")) or ZERO, leverage=leverage,
        margin_mode=raw.get("marginMode"), liquidation_price=_dec(raw.get("liquidationPrice")),
    )


def configure_symbol(venue: Any, symbol: str, leverage: int | None, margin_mode: str | None) -> None:
    """Set the margin mode, then the leverage, of `symbol` on the venue (each only when configured)."""
    ccxt, exchange = venue.ccxt, venue.exchange
    if margin_mode is not None:
        if not exchange.has.get("setMarginMode"):
            raise FuturesSetupError(f"{exchange.id} cannot set the margin mode: remove margin_mode")
        try:
            venue.call(f"margin mode {symbol}", exchange.set_margin_mode, margin_mode, symbol)
        except ccxt.NoChange:
            pass  # already so
        except ccxt.ExchangeError as exc:
            raise FuturesSetupError(f"{symbol}: the venue refused margin_mode {margin_mode}: {exc}") from None
    if leverage is not None:
        if not exchange.has.get("setLeverage"):
            raise FuturesSetupError(f"{exchange.id} cannot set the leverage: remove leverage")
        try:
            venue.call(f"leverage {symbol}", exchange.set_leverage, leverage, symbol)
        except ccxt.ExchangeError as exc:
            raise FuturesSetupError(f"{symbol}: the venue refused leverage {leverage}: {exc}") from None


def require_one_way(venue: Any, symbol: str | None = None) -> None:
    """Refuse an account in hedge mode (two positions per symbol): the adapter nets one position."""
    exchange = venue.exchange
    if not exchange.has.get("fetchPositionMode"):
        return
    mode = venue.call("position mode", exchange.fetch_position_mode, symbol)
    if mode.get("hedged"):
        raise FuturesSetupError(
            f"{exchange.id}: the account is in hedge mode (dual-side positions); the adapter trades "
            "one-way mode: switch hedge mode off in the venue's position settings"
        )
