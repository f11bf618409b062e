"""The BentoML service and its web calculator (run from the repository root)."""
