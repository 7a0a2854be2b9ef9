"""The top layer: the `keycam` command's root group (each subcommand's module is imported on first use)."""
