"""End to end: `atf live CONFIG --confirm-live` with `broker.type: ibkr` against the fake TWS.

The bot (rsi_bb_atr on AAPL hourly bars) runs as its own process and talks to the fake TWS on
127.0.0.1 through the real ib_async client. The fake's time is virtual: the test moves it on
tick by tick once the bot has fetched its warm-up and subscribed to live bars, until an order
for a signal reaches IB, then sends Ctrl-C.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.live_configs import CONFIG
from tests.e2e.test_cli_live import _start
from tests.fakes.fake_tws import FakeTWS
from tests.fakes.fake_tws_setup import AAPL, fake_tws

WARMUP = 200
H = 3600


@pytest.fixture
def tws() -> Iterator[FakeTWS]:
    with fake_tws(bars=700, history=300) as server:
        yield server


def _config(tws: FakeTWS) -> dict[str, Any]:
    raw = yaml.safe_load(CONFIG.read_text())
    raw["bot"]["symbols"] = ["AAPL"]
    raw["data"] = {"warmup_bars": WARMUP}
    raw["broker"] = {
        "type": "ibkr", "trading_mode": "live", "cash": 100_000.0, "commission_rate": 0.0,
        "ibkr": {"port": tws.port, "client_id": 7, "contracts": {"AAPL": "AAPL:STK:SMART:USD"},
                 "connect_timeout": 5.0, "request_timeout": 10.0, "commission_wait": 0.5,
                 "reconnect": {"initial_delay": 0.05, "factor": 2.0, "max_delay": 0.2, "max_attempts": 50}},
    }
    return raw


def _subscribed(tws: FakeTWS) -> bool:
    return bool(tws.call(lambda: any(s.history for s in tws.sessions)))


def test_atf_live_on_ibkr_warms_up_places_an_order_for_a_signal_and_stops_cleanly(
    tmp_path: Path, tws: FakeTWS
) -> None:
    (tmp_path / "bot.yaml").write_text(yaml.safe_dump(_config(tws), sort_keys=False))
    start = tws.now
    proc = _start(["live", "bot.yaml", "--confirm-live", "-o", "out"], tmp_path, {})
    try:
        deadline = time.monotonic() + 60
        while not _subscribed(tws):  # connected, warm-up fetched, following live bars
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the bot never subscribed to live bars"
            time.sleep(0.05)
        assert tws.now == start  # nothing moved while it warmed up
        # Hour by hour (four ticks each) until the bot's first order reaches IB, then two more bars.
        bars_after = None
        while bars_after is None or bars_after < 2:
            assert time.monotonic() < deadline + 120, "no order reached IB"
            for _ in range(4):
                tws.step()
                time.sleep(0.02)
            if bars_after is not None:
                bars_after += 1
            elif tws.orders():
                bars_after = 0
        out, err = _interrupt(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Stopped: interrupted" in out

    result = json.loads((tmp_path / "out" / "result.json").read_text())
    state = json.loads((tmp_path / "out" / "state.json").read_text())
    diag = result["diagnostics"]
    assert diag["mode"] == "live" and diag["stop_reason"] == "interrupted"
    assert diag["live"] == {"source": "ibkr:ibkr", "broker": "ibkr", "history_bars": {"AAPL": WARMUP},
                            "live_bars": {"AAPL": result["bars"] - WARMUP}}
    assert result["bars"] > WARMUP

    # The first order was the entry of a signal on a live bar, under the bot's client order id.
    at_ib = tws.orders()
    entry = at_ib[0]
    assert entry.order_ref.startswith("atf-") and entry.order_ref.endswith("-entry-0")
    assert entry.action == "BUY" and entry.status == "Filled"
    # An entry filled: the bot holds what IB holds (state.json), its protection working at IB.
    held = tws.position(AAPL.con_id)
    positions = {p["symbol"]: p for p in state["positions"]}
    assert held > 0 and positions["AAPL"]["quantity"] == pytest.approx(held)
    working = {o["client_order_id"] for o in state["open_orders"]}
    assert working and working <= {o.order_ref for o in at_ib if o.status in ("Submitted", "PreSubmitted")}

    # Stopped cleanly: the bot disconnected from IB.
    deadline = time.monotonic() + 5
    while tws.call(lambda: len(tws.sessions)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tws.call(lambda: len(tws.sessions)) == 0


def _interrupt(proc: Any) -> tuple[str, str]:
    import signal

    time.sleep(0.5)  # let the bot take the last bar and IB's answers
    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=120)  # type: ignore[no-any-return]
