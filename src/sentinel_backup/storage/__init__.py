"""Destinations: one module per backend behind the Storage protocol."""
