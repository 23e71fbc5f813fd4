"""Download OHLCV history from a ccxt exchange into files the CSV loader reads.

* Paged: `fetch_ohlcv` from `since` in pages of the exchange's limit, every request through
  the adapter's retrying `Caller` (backoff on network errors, 429 and 5xx).
* Closed candles only: the forming candle (close after the exchange's server time) is left out.
* Incremental: an existing file is extended with the candles after its last bar only, never
  duplicating one; the new file is written to a temporary name and renamed over the old, so
  an interruption never leaves a half-written file.
* Files are named ``<exchange>_<BASE>-<QUOTE>_<timeframe>.<csv|parquet>`` (that is what
  `list_files` reads back); CSV has the header ``datetime,open,high,low,close,volume`` with
  ISO 8601 UTC times, which `trading.data.load_csv` loads.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd

from trading.brokers.ccxt_config import RetrySettings, settings_from_broker
from trading.brokers.ccxt_resilience import Caller, CircuitBreaker, RequestBudget, Scrubber
from trading.brokers.ccxt_venue import build_exchange
from trading.data.csv_loader import load_csv
from trading.data.validation import OHLCV_COLUMNS

FORMATS = ("csv", "parquet")
_NAME = re.compile(r"^(?P<exchange>[a-z0-9]+)_(?P<base>[A-Za-z0-9]+)-(?P<quote>[A-Za-z0-9]+)_(?P<tf>\d+[smhdwM])\.(?P<fmt>csv|parquet)$")
Progress = Callable[[int, int | None], None]  # (candles so far, expected total or None)


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    added: int
    rows: int
    first: pd.Timestamp | None
    last: pd.Timestamp | None


def file_name(exchange: str, symbol: str, timeframe: str, fmt: str) -> str:
    return f"{exchange}_{symbol.replace('/', '-').split(':')[0]}_{timeframe}.{fmt}"


def open_exchange(exchange_id: str, *, api_host: str | None = None) -> Any:
    """A public (no credentials) ccxt client of the real venue; `api_host` sends it elsewhere."""
    settings = settings_from_broker(exchange_id, {"trading_mode": "live", "testnet": False})
    exchange = build_exchange(settings)
    if api_host:
        exchange.urls["api"] = _rehost(exchange.urls["api"], api_host)
    return exchange


def _rehost(api: Any, host: str) -> Any:
    """Point every API URL at `host` (scheme://host:port), keeping the paths."""
    base = urlsplit(host)
    if isinstance(api, dict):
        return {k: _rehost(v, host) for k, v in api.items()}
    if isinstance(api, str):
        parts = urlsplit(api)
        return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, parts.fragment))
    return api


def read_bars(path: Path) -> pd.DataFrame:
    """Load a downloaded file into the canonical frame (UTC index, OHLCV columns)."""
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        frame.index = pd.DatetimeIndex(frame.index, name="datetime").tz_convert("UTC")
        return frame
    return load_csv(path, validate=False)


def download(
    exchange: Any,
    symbol: str,
    timeframe: str,
    since: pd.Timestamp,
    until: pd.Timestamp | None = None,
    *,
    out: Path,
    fmt: str = "csv",
    progress: Progress | None = None,
    page_limit: int = 1000,
    caller: Caller | None = None,
) -> DownloadResult:
    """Fetch the closed candles in [since, until] after those already in the file; write atomically."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    call = caller or Caller(RetrySettings(), RequestBudget(1200), CircuitBreaker(10**9, 0), Scrubber())
    call("load markets", exchange.load_markets)
    unified = _symbol(exchange, symbol)
    if exchange.timeframes and timeframe not in exchange.timeframes:
        raise ValueError(f"{exchange.id} has no timeframe {timeframe!r}; it offers {', '.join(exchange.timeframes)}")
    tf_ms = exchange.parse_timeframe(timeframe) * 1000
    path = Path(out) / file_name(exchange.id, unified, timeframe, fmt)
    old = read_bars(path) if path.exists() else None
    start = _ms(since)
    if old is not None and len(old):
        start = max(start, _ms(old.index[-1]) + tf_ms)
    now = int(call("server time", exchange.fetch_time)) if exchange.has.get("fetchTime") else exchange.milliseconds()
    end = min(_ms(until) if until is not None else now, now - tf_ms)  # the last open of a closed candle
    expected = max(0, (end - start) // tf_ms + 1) if end >= start else 0
    rows: list[list[float]] = []
    cursor = start
    while cursor <= end:
        page = call("fetch ohlcv", exchange.fetch_ohlcv, unified, timeframe, cursor, page_limit)
        page = [c for c in page if cursor <= c[0] <= end and c[0] + tf_ms <= now]  # closed, in range
        if not page:
            break
        rows.extend(page)
        cursor = int(page[-1][0]) + tf_ms
        if progress is not None:
            progress(len(rows), expected)
    new = _frame(rows)
    if old is None and not len(new):
        raise ValueError(f"{exchange.id} has no closed {timeframe} candles of {unified} from "
                         f"{pd.Timestamp(start, unit='ms', tz='UTC')} to {pd.Timestamp(end, unit='ms', tz='UTC')}")
    frame = new if old is None else pd.concat([old, new[new.index > old.index[-1]] if len(old) else new])
    frame = frame[~frame.index.duplicated(keep="first")].sort_index()
    if len(new):
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(frame, path, fmt)
    return DownloadResult(path, len(new), len(frame), frame.index[0] if len(frame) else None,
                          frame.index[-1] if len(frame) else None)


def _symbol(exchange: Any, symbol: str) -> str:
    if symbol in exchange.markets:
        return symbol
    by_id = (exchange.markets_by_id or {}).get(symbol)
    if by_id:
        return by_id[0]["symbol"]
    raise ValueError(f"{exchange.id} has no market {symbol!r} (use the form BTC/USDT)")


def _ms(ts: pd.Timestamp) -> int:
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return int(t.value // 1_000_000)


def _frame(rows: list[list[float]]) -> pd.DataFrame:
    index = pd.DatetimeIndex(pd.to_datetime([int(r[0]) for r in rows], unit="ms", utc=True), name="datetime")
    data = {c: [float(r[i + 1] or 0.0) for r in rows] for i, c in enumerate(OHLCV_COLUMNS)}
    return pd.DataFrame(data, index=index, columns=list(OHLCV_COLUMNS))


def _write_atomic(frame: pd.DataFrame, path: Path, fmt: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        if fmt == "parquet":
            try:
                frame.to_parquet(tmp)
            except ImportError as exc:
                raise ImportError("--format parquet needs pyarrow: pip install pyarrow") from exc
        else:
            frame.to_csv(tmp, index_label="datetime", date_format="%Y-%m-%dT%H:%M:%SZ")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@dataclass(frozen=True)
class FileInfo:
    path: Path
    exchange: str
    symbol: str
    timeframe: str
    first: pd.Timestamp | None
    last: pd.Timestamp | None
    rows: int


def list_files(folder: Path) -> list[FileInfo]:
    """Describe every downloaded file in `folder` (named as `file_name` names them)."""
    out = []
    for path in sorted(Path(folder).glob("*")):
        m = _NAME.match(path.name)
        if not m:
            continue
        frame = read_bars(path)
        out.append(FileInfo(path, m["exchange"], f"{m['base']}/{m['quote']}", m["tf"],
                            frame.index[0] if len(frame) else None, frame.index[-1] if len(frame) else None,
                            len(frame)))
    return out
