"""edgepush agent: a resident push client with an offline SQLite cache."""

__version__ = "0.1.0"
