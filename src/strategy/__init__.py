"""Strategy composition: BaseStrategy, entry and exit mixins, indicators, registry."""
