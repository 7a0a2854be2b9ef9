"""Keying: derive a device key set for a network and compute W'_i = A_i W_i A_{i-1}^-1."""
