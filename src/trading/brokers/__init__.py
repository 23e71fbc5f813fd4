"""Brokers: the simulated broker shared by backtest and paper, and live adapters."""
