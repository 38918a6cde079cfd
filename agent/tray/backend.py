"""Can a tray run here, and with which pystray backend: decided before anything starts.

``load()`` imports pystray (which picks its backend and, on X11, opens the display at import
time) and turns each way that fails into one line saying what to do, raised as
``UsageError`` (exit 2). The tray command calls it before it reads the store or starts the
service, so a tray that cannot show leaves nothing behind: no database, no connection.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import agent
from agent.errors import UsageError

# The source checkout this agent runs from (``pip install -e`` or PYTHONPATH), if it is one.
_ROOT = Path(agent.__file__).resolve().parent.parent
CHECKOUT: Path | None = _ROOT if (_ROOT / "pyproject.toml").is_file() else None
NO_TRAY = "for the agent without a tray use 'pushagent run'"
# What the 'desktop' extra brings that the tray imports (top-level module names).
_EXTRA_MODULES = {"pystray", "PIL", "Xlib", "six"}


def install_hint(*, frozen: bool, prefix: Path, executable: Path, checkout: Path | None) -> str:
    """How to get pystray and Pillow for the way this pushagent was installed. Pure."""
    if frozen:
        return (
            "this pushagent binary was built without the tray; use a release binary "
            "(they include it) or build one with the desktop extra (docs/INSTALL.md)"
        )
    if "pipx" in prefix.parts and "venvs" in prefix.parts:
        return f"pipx inject {prefix.name} pystray Pillow"
    if checkout is not None:
        return f"{executable} -m pip install -e '{checkout}[desktop]'"
    return f"{executable} -m pip install 'edgepush[desktop]'"


def _missing_extra() -> UsageError:
    hint = install_hint(
        frozen=bool(getattr(sys, "frozen", False)),
        prefix=Path(sys.prefix),
        executable=Path(sys.executable),
        checkout=CHECKOUT,
    )
    return UsageError(
        "the tray needs pystray and Pillow (the 'desktop' extra), not installed here; "
        f"install them with: {hint}"
    )


def _no_display(exc: BaseException) -> UsageError:
    """python-xlib's DisplayNameError (DISPLAY empty or malformed) or DisplayConnectionError."""
    name = type(exc).__name__
    if name == "DisplayNameError" and exc.args and not exc.args[0]:
        why = "there is no display (DISPLAY is not set)"
    elif name == "DisplayConnectionError" and len(exc.args) >= 2:
        why = f"cannot open the display {exc.args[0]}: {exc.args[1]}"
    else:
        why = f"cannot open the display: {exc}"
    return UsageError(f"the tray needs a graphical session, and {why}; {NO_TRAY}")


def load() -> ModuleType:
    """pystray, imported; or ``UsageError`` with the one line that says what to do."""
    try:
        importlib.import_module("PIL.Image")  # the icon is drawn with it
        pystray = importlib.import_module("pystray")
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] in _EXTRA_MODULES:
            raise _missing_extra() from None
        raise
    except ImportError as exc:  # pystray found no backend it can load
        raise UsageError(f"no system-tray backend works here ({exc}); {NO_TRAY}") from None
    except Exception as exc:
        if type(exc).__module__.startswith("Xlib"):
            raise _no_display(exc) from None
        raise
    return pystray
