"""``pushagent tray``: a system-tray icon over the running agent.

Three threads, each owning one thing: the main thread runs pystray's loop (macOS requires
that), the service thread runs the asyncio agent (``start_service``), and a refresh thread
reads the status file and the store every second and redraws the icon and menu when
something changed. The tray talks to the service only through the store (pause, read
marks) and the status file (connection state), the same way the CLI does.
"""
