"""Per-platform speed settings, each with its measured reason: XLA compile options, huge-page malloc."""
