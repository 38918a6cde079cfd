"""The relay's web app: static HTML, CSS and JavaScript modules served at ``/`` and ``/app/``.

The files under ``static/`` are the whole app (no build step); ``routes`` serves them with a
strict Content-Security-Policy. docs/WEB.md describes the app for users.
"""
