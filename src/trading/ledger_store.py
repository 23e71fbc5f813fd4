"""Trade ledger files: the JSON document, atomic export to a folder or fsspec URL, and loading.

A ledger is written to ``<dest>/trade-ledgers/YYYY/MM/DD/HHMMSS-{ledger_id}-{correlation_id}.json``.
`dest` is a local folder or any fsspec URL (``file://``, ``s3://bucket/prefix`` with s3fs,
``memory://``). Local files are written to a temporary file in the same folder, fsynced and
renamed; other filesystems get one whole-object write (one PUT on S3), so a reader never sees a
half-written ledger. Credentials are never taken from here: s3fs finds them the usual way
(environment, AWS profile, instance role). See docs/ledger.md.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from trading.atomic_io import atomic_write_bytes
from trading.ledger import LedgerEntry, TradeLedger
from trading.orders import OrderSide

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FORMAT = "atf-trade-ledger"
FOLDER = "trade-ledgers"
FILE_NAME = re.compile(r"^\d{6}-[A-Za-z0-9_.\-]+\.json$")


class LedgerFileError(ValueError):
    """A file is not a trade ledger this version can read."""


def export_path(ledger_id: str, correlation_id: str, created: datetime) -> str:
    """Return the file's path relative to the export destination."""
    t = created.astimezone(UTC)
    return f"{FOLDER}/{t:%Y/%m/%d}/{t:%H%M%S}-{ledger_id}-{correlation_id}.json"


def ledger_document(ledger: TradeLedger, correlation_id: str, created: datetime) -> dict[str, Any]:
    """Return the JSON document of the ledger (Decimal as string, times in ISO 8601 UTC)."""
    entries = ledger.get_ledger()
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "ledger_id": ledger.ledger_id,
        "correlation_id": correlation_id,
        "created_at": created.astimezone(UTC).isoformat(),
        "totals": totals_of(entries),
        "entries": [e.to_dict() for e in entries],
    }


def totals_of(entries: Sequence[LedgerEntry]) -> dict[str, Any]:
    """Return count, buy and sell value and fees of `entries` (Decimal as string)."""
    buy = sum((e.notional for e in entries if e.direction is OrderSide.BUY), Decimal(0))
    sell = sum((e.notional for e in entries if e.direction is OrderSide.SELL), Decimal(0))
    return {"entries": len(entries), "buy_value": str(buy), "sell_value": str(sell),
            "fees": str(sum((e.fee for e in entries), Decimal(0)))}


def _fs(url: str, storage_options: Mapping[str, Any] | None) -> tuple[AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(str(url), **dict(storage_options or {}))


def _display(fs: AbstractFileSystem, path: str) -> str:
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


def write_ledger(
    ledger: TradeLedger,
    dest: str,
    correlation_id: str,
    created: datetime,
    storage_options: Mapping[str, Any] | None = None,
) -> str:
    """Write the ledger's JSON under `dest`; return where it went (a path, or a URL)."""
    data = (json.dumps(ledger_document(ledger, correlation_id, created), indent=2) + "\n").encode()
    fs, root = _fs(dest, storage_options)
    path = posixpath.join(root, export_path(ledger.ledger_id, correlation_id, created))
    if isinstance(fs, LocalFileSystem):
        atomic_write_bytes(path, data, sync_dir=True)
    else:
        fs.pipe_file(path, data)  # one whole-object write: S3 makes it visible only when complete
    where = _display(fs, path)
    log.info("trade ledger %s exported: %d entries to %s", ledger.ledger_id, ledger.total_entries, where)
    return where


def parse_document(doc: Any, source: str) -> TradeLedger:
    """Rebuild a ledger from its JSON document; raise LedgerFileError naming `source`."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise LedgerFileError(f"{source}: not a trade ledger file (no \"format\": \"{FORMAT}\")")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise LedgerFileError(f"{source}: schema_version {version!r}; this version reads {SCHEMA_VERSION}")
    try:
        entries = [LedgerEntry.from_dict(e) for e in doc["entries"]]
        ledger = TradeLedger.restore(doc["ledger_id"], doc.get("correlation_id"),
                                     datetime.fromisoformat(doc["created_at"]), entries)
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise LedgerFileError(f"{source}: malformed ledger: {exc!r}") from None
    if doc.get("totals") != totals_of(entries):
        raise LedgerFileError(f"{source}: totals {doc.get('totals')} do not match its entries")
    return ledger


def read_ledger(url: str, storage_options: Mapping[str, Any] | None = None) -> TradeLedger:
    """Read one exported ledger file."""
    fs, path = _fs(url, storage_options)
    return _read(fs, path)


def _read(fs: AbstractFileSystem, path: str) -> TradeLedger:
    source = _display(fs, path)
    try:
        doc = json.loads(fs.cat_file(path))
    except json.JSONDecodeError as exc:
        raise LedgerFileError(f"{source}: not JSON: {exc}") from None
    return parse_document(doc, source)


@dataclass(frozen=True)
class LedgerFile:
    """One ledger and where it was read from."""

    source: str
    ledger: TradeLedger


def read_ledgers(url: str, storage_options: Mapping[str, Any] | None = None) -> list[LedgerFile]:
    """Read one ledger file, or every ledger file (``HHMMSS-….json``) under a folder or prefix.

    Raise FileNotFoundError when there is none.
    """
    fs, root = _fs(url, storage_options)
    if fs.isfile(root):
        return [LedgerFile(_display(fs, root), _read(fs, root))]
    paths = sorted(p for p in fs.find(root) if FILE_NAME.match(posixpath.basename(p)))
    if not paths:
        raise FileNotFoundError(f"no trade ledger files under {url}")
    return [LedgerFile(_display(fs, p), _read(fs, p)) for p in paths]


def query_entries(
    url: str,
    *,
    symbol: str | None = None,
    strategy: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> list[LedgerEntry]:
    """Return the entries of the ledger files at `url` that pass the filters, oldest first.

    `since` and `until` are inclusive bounds on the fill time; `strategy` keeps the fills
    that strategy has a share of.
    """
    out = [
        e
        for f in read_ledgers(url, storage_options)
        for e in f.ledger.get_ledger()
        if (symbol is None or e.symbol == symbol)
        and (strategy is None or strategy in e.strategy_names)
        and (since is None or e.timestamp >= since)
        and (until is None or e.timestamp <= until)
    ]
    return sorted(out, key=lambda e: e.timestamp)  # stable: file order within one time
