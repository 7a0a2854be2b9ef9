"""The base layer: errors, atomic writes, ids, time stamps, signing and CLI conventions; it imports
nothing else of keycam, and every other package may import it."""
