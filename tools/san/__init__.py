"""Semi-adversarial networks (SAN): gender-confounding face perturbation, host side only (needs torch)."""
