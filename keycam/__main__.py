"""`python -m keycam ...` is the `keycam` command."""
from keycam.cli import main

main()
