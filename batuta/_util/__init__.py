"""Helpers every layer may use (files, fuzzy matching, the loopback rule, paths).

Nothing here imports any other part of batuta: this is the bottom of the import order.
"""
