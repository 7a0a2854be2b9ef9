"""keycam keys package."""
