"""keycam hardware package."""
