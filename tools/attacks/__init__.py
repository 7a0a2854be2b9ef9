"""Attacks on keyed models and keyed frames: structure, plaintext, learned inversion, model reuse."""
