"""edgepush edge relay: an ntfy-compatible push hub for the LAN, bridged to an upstream broker."""

from agent import __version__

__all__ = ["__version__"]
