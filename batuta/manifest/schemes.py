"""The schemes a model's ``source`` may use: one list for the manifest's rules, the
runtime's source resolution and every message that names them.

Standard library only, so the runtime can use it without loading the manifest's schema.
"""

from __future__ import annotations

# http:// is accepted and fetched like https:// (a digest pin is what protects either).
SOURCE_SCHEMES = ("pkg", "hf", "ollama", "http", "https", "file")

# What an error about a source tells the user to use instead.
SOURCE_HINT = "use pkg://, hf://, ollama://, https://, file:// or a path"
