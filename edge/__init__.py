"""Device side of keycam: runtime, pipeline, egress, metrics and the device service."""
