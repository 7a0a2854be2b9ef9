"""keycam deploy package."""
