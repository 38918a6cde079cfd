"""``pushagent tray``: a system-tray icon over the running agent.

Two threads, each owning one thing: the main thread runs pystray's loop (macOS requires
that), which also reads the status file and the store every second and redraws the icon
and menu when something changed; the service thread runs the asyncio agent
(``start_service``). On X11 nothing but the loop's thread touches the icon (pystray's
shared X connection deadlocks otherwise: ``agent.tray.xembed``); other backends refresh
from a thread of their own through pystray's thread-safe calls. The tray talks to the
service only through the store (pause, read marks) and the status file (connection
state), the same way the CLI does.
"""
