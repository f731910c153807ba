"""The BentoML service that serves the blessed champion (design.md §8)."""
