"""Trading core: config, data, engine, analytics, persistence and CLI."""
