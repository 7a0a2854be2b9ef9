"""keycam tools package."""
