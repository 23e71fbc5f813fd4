"""Contract specs for Interactive Brokers: parse ``AAPL:STK:SMART:USD`` and qualify it with IB.

A spec is ``SYMBOL:SECTYPE`` followed by fields that depend on the type:

* stock            ``SYMBOL:STK[:EXCHANGE[:CURRENCY[:PRIMARY_EXCHANGE]]]``  (SMART, USD)
* forex            ``PAIR:CASH[:EXCHANGE]``                                   (IDEALPRO)
* future           ``SYMBOL:FUT:EXCHANGE:EXPIRY[:CURRENCY[:MULTIPLIER]]``      (expiry YYYYMM or YYYYMMDD)
* continuous future ``SYMBOL:CONTFUT:EXCHANGE[:CURRENCY]``  bars follow the front month; orders go
  to the future the continuous contract currently points at.

Qualifying asks IB for the contract details; an unknown or ambiguous spec is an error that
names it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from trading.brokers.ibkr_config import IBKRError, require_ib_async
from trading.suggest import did_you_mean

SEC_TYPES = ("STK", "CASH", "FUT", "CONTFUT")
_EXPIRY = re.compile(r"^\d{6}(\d{2})?$")
_CCY = re.compile(r"^[A-Z]{3}$")


class ContractSpecError(IBKRError, ValueError):
    """A contract spec cannot be parsed, or IB does not know the contract it describes."""


@dataclass(frozen=True)
class ContractSpec:
    """One instrument as the config names it; `text` is the spec it was parsed from."""

    text: str
    symbol: str
    sec_type: str
    exchange: str = ""
    currency: str = ""
    expiry: str = ""
    primary_exchange: str = ""
    multiplier: str = ""


def parse_spec(text: str) -> ContractSpec:
    """Parse a contract spec; raise ContractSpecError naming the spec and what is wrong."""
    parts = [p.strip() for p in str(text).split(":")]
    if len(parts) < 2 or not parts[0]:
        raise ContractSpecError(
            f"contract spec {text!r}: use SYMBOL:TYPE[:...], e.g. AAPL:STK:SMART:USD, EURUSD:CASH, ES:FUT:CME:202612"
        )
    symbol, kind, rest = parts[0].upper(), parts[1].upper(), [p.upper() for p in parts[2:]]
    if kind not in SEC_TYPES:
        hint = did_you_mean(kind, SEC_TYPES)
        raise ContractSpecError(
            f"contract spec {text!r}: unknown type {kind!r}"
            + (f"; did you mean {hint!r}?" if hint else "")
            + f" (known: {', '.join(SEC_TYPES)})"
        )
    get = lambda i, default="": rest[i] if len(rest) > i and rest[i] else default
    if kind == "STK":
        _check_fields(text, rest, 3)
        spec = ContractSpec(text, symbol, kind, get(0, "SMART"), get(1, "USD"), primary_exchange=get(2))
    elif kind == "CASH":
        _check_fields(text, rest, 1)
        if not re.fullmatch(r"[A-Z]{6}", symbol):
            raise ContractSpecError(f"contract spec {text!r}: a forex pair is six letters, e.g. EURUSD")
        spec = ContractSpec(text, symbol, kind, get(0, "IDEALPRO"), symbol[3:])
    elif kind == "FUT":
        _check_fields(text, rest, 4)
        if not get(0) or not _EXPIRY.match(get(1)):
            raise ContractSpecError(
                f"contract spec {text!r}: a future needs SYMBOL:FUT:EXCHANGE:EXPIRY with expiry YYYYMM or YYYYMMDD"
            )
        spec = ContractSpec(text, symbol, kind, get(0), get(2), expiry=get(1), multiplier=get(3))
    else:
        _check_fields(text, rest, 2)
        if not get(0):
            raise ContractSpecError(f"contract spec {text!r}: a continuous future needs SYMBOL:CONTFUT:EXCHANGE")
        spec = ContractSpec(text, symbol, kind, get(0), get(1))
    if spec.currency and not _CCY.match(spec.currency):
        raise ContractSpecError(f"contract spec {text!r}: currency {spec.currency!r} is not a 3-letter code")
    return spec


def _check_fields(text: str, rest: list[str], most: int) -> None:
    if len(rest) > most:
        raise ContractSpecError(f"contract spec {text!r}: too many fields after the type (at most {most})")


def spec_for_symbol(symbol: str, contracts: dict[str, str]) -> ContractSpec:
    """Return the spec configured for a bot symbol; a symbol written as a spec stands for itself."""
    if symbol in contracts:
        return parse_spec(contracts[symbol])
    if ":" in symbol:
        return parse_spec(symbol)
    hint = did_you_mean(symbol, contracts)
    raise ContractSpecError(
        f"no contract spec for symbol {symbol!r}: add it to broker.ibkr.contracts "
        f"(e.g. {symbol}: '{symbol}:STK:SMART:USD')" + (f"; did you mean {hint!r}?" if hint else "")
    )


def build_contract(spec: ContractSpec) -> Any:
    """Return the unqualified ib_async contract for a spec."""
    ib = require_ib_async()
    if spec.sec_type == "STK":
        return ib.Stock(spec.symbol, spec.exchange, spec.currency, primaryExchange=spec.primary_exchange)
    if spec.sec_type == "CASH":
        return ib.Forex(spec.symbol, exchange=spec.exchange)
    if spec.sec_type == "FUT":
        return ib.Future(
            spec.symbol, spec.expiry, spec.exchange, multiplier=spec.multiplier, currency=spec.currency
        )
    return ib.ContFuture(spec.symbol, spec.exchange, currency=spec.currency)


@dataclass(frozen=True)
class Instrument:
    """A qualified instrument: `data` is the contract for bars, `trade` the one orders go to."""

    symbol: str
    spec: ContractSpec
    data: Any
    trade: Any

    @property
    def con_id(self) -> int:
        return int(self.trade.conId)

    @property
    def multiplier(self) -> float:
        return float(self.trade.multiplier or 1)


async def qualify(ib: Any, symbol: str, spec: ContractSpec) -> Instrument:
    """Ask IB for the contract of `spec`; raise ContractSpecError if it is unknown or ambiguous."""
    contract = build_contract(spec)
    [found] = await ib.qualifyContractsAsync(contract)
    if found is None:
        raise ContractSpecError(f"IB does not know contract {spec.text!r} (symbol {symbol}), or it is ambiguous")
    trade = found
    if spec.sec_type == "CONTFUT":
        # Orders cannot go to a continuous contract: trade the future it points at.
        ib_mod = require_ib_async()
        [trade] = await ib.qualifyContractsAsync(ib_mod.Future(conId=found.conId, exchange=found.exchange))
        if trade is None:
            raise ContractSpecError(f"IB has no tradable future behind {spec.text!r}")
    return Instrument(symbol=symbol, spec=spec, data=found, trade=trade)
