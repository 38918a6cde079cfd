"""``--notifier desktop``: native notifications through desktop-notifier (plyer as fallback).

Linux: D-Bus ``org.freedesktop.Notifications``; macOS and Windows: their notification
centres (through desktop-notifier; untested here). Priority 1-2 → low urgency, 3 → normal,
4-5 → critical; 5 also asks for the default sound. A click on the body opens the message's
``click`` URL and records ``clicked``; closing records ``dismissed``; the server accepting it
records ``displayed``. A message that must be acknowledged (agent.ackcore) gets an
"Acknowledge" button first, which records ``acknowledged``; its re-alerts (agent.realert)
close the notification on screen and show a new one (urgency critical, with sound). Action
buttons: ``view`` opens its URL, ``http`` sends its request
(10 s timeout, the answer's status logged), ``copy`` puts its ``value`` on the clipboard
(agent.notify.clipboard; no button without a clipboard tool). ``broadcast`` (an Android
intent) has no meaning on a desktop and gets no button: a button that does nothing is worse
than none.

ntfy 2.16 sequences (agent.store.sequences): a message whose ``(topic, sequence key)`` is on
screen replaces that notification in place (D-Bus ``Notify`` with its ``replaces_id``: the
same notification id, the new text); ``message_clear`` and ``message_delete`` close it
(``CloseNotification``). The D-Bus ids of what is on screen are kept in the cache folder
(agent.notify.screen), so an update or clear that reaches a restarted agent still finds the
notification an earlier run showed.
desktop-notifier always sends ``replaces_id = 0``, so for an update its ``call_notify`` is
wrapped for that one call (under a lock) to pass the id of the notification it replaces.

Attachments (agent.attachments downloads them after the message is shown): when the file is
in the cache, a notification still on screen is replaced in place by one that shows the
image (desktop-notifier's ``attachment``: D-Bus ``image-path``) or, for any other file, has
buttons by its sniffed type (agent.notify.files): audio and video "Play", anything else
"Open" and "Save" (a copy in the Downloads folder that never overwrites).

``icon`` (an http(s) URL) is fetched into the cache folder (agent.notify.icons) and passed
as a file; ``content_type: text/markdown`` is rendered (agent.notify.markdown) to the
server's body markup when it advertises ``body-markup``, else to plain text.

No D-Bus, no notification daemon, no display: one warning, then every message goes to the
``log`` backend instead (it is stored either way; ``displayed`` is not recorded).

Only this module imports desktop-notifier and plyer, and only when it is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from agent import ackcore
from agent.config import DesktopConfig, downloads_dir
from agent.envelope import Message
from agent.notify import EventSink, LogNotifier, clipboard, files, markdown
from agent.notify.icons import IconCache
from agent.notify.screen import ScreenMemory
from agent.notify.text import clean, safe_url, urgency_name
from agent.store import Stored
from agent.store.sequences import event_of, sequence_key

log = logging.getLogger("pushagent.notify.desktop")
PROBE_TIMEOUT = 5.0
ACK_LABEL = "Acknowledge"
"""The button of a message that must be acknowledged (agent.ackcore)."""
SCREEN_KEEP = 1000
"""Sequences remembered as on screen (oldest forgotten first: then an update shows anew)."""


class DesktopNotifier:
    """Native notifications; falls back to ``log`` when the platform cannot show them."""

    name = "desktop"
    hand_off_size = 0  # the whole batch: the service marks after it

    def __init__(
        self, cfg: DesktopConfig, on_event: EventSink, *, cache_dir: Path | None = None
    ) -> None:
        self._cfg = cfg
        self._icons = IconCache(cache_dir / "icons") if cache_dir is not None else None
        self._screen: OrderedDict[tuple[str, str], str] = OrderedDict()
        """``(topic, sequence key)`` → desktop-notifier identifier of what is on screen."""
        self._memory = ScreenMemory(cache_dir / "screen.json" if cache_dir is not None else None)
        """The same as D-Bus ids, for the next run."""
        self._notify_lock = asyncio.Lock()
        self._on_event = on_event
        self._dn: Any = None  # desktop_notifier.DesktopNotifier once probed
        self._pending_dn: Any = None  # the same, from before the probe (to close its bus)
        self._plyer: Any = None
        self._markup = False
        self._fallback = LogNotifier()
        self._warned = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._files: OrderedDict[str, tuple[Path, str]] = OrderedDict()
        """message id → its downloaded attachment (path, type)."""
        self._showing: dict[str, str] = {}
        """desktop-notifier identifier on screen → its message id."""

    def attachment_ready(self, item: Stored, path: Path, mime: str) -> None:
        """``item``'s attachment is in the cache: show it if its notification is on screen."""
        mid = item.message.id
        self._files[mid] = (path, mime)
        while len(self._files) > SCREEN_KEEP:
            self._files.popitem(last=False)
        ident = self._screen.get((item.message.topic, sequence_key(item.message)))
        if ident is not None and self._showing.get(ident) == mid and self._dn is not None:
            self._spawn(self._send(item, update=True))

    @property
    def available(self) -> bool:
        """False once the agent fell back to ``log``."""
        return self._dn is not None or self._plyer is not None

    async def __aenter__(self) -> Self:
        try:
            await self._probe()
        except Exception as exc:  # noqa: BLE001 - any failure here means "cannot show"; never crash
            await self._disconnect()
            self._dn = None
            self._warn(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 5.0)
        await self._disconnect()

    async def _disconnect(self) -> None:
        # desktop-notifier keeps its D-Bus connection open for the process' life; we close
        # it with the backend so a service restart (or a test) does not leak the socket.
        bus = getattr(getattr(self._pending_dn, "_backend", None), "bus", None)
        if bus is not None and getattr(bus, "connected", False):
            bus.disconnect()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(bus.wait_for_disconnect(), 5.0)

    async def _probe(self) -> None:
        try:
            import desktop_notifier
        except ImportError:
            import plyer  # the contract's fallback where desktop-notifier cannot be installed

            self._plyer = plyer
            return
        # desktop-notifier logs every failed send with a traceback; we report failures
        # ourselves, once.
        logging.getLogger("desktop_notifier").setLevel(logging.CRITICAL)
        dn = desktop_notifier.DesktopNotifier(app_name="edgepush", app_icon=None)
        self._pending_dn = dn
        await asyncio.wait_for(dn.get_capabilities(), PROBE_TIMEOUT)
        iface = getattr(getattr(dn, "_backend", None), "interface", None)
        if iface is not None and hasattr(iface, "call_get_capabilities"):
            caps = await asyncio.wait_for(iface.call_get_capabilities(), PROBE_TIMEOUT)
            self._markup = "body-markup" in caps
        self._dn = dn
        self._memory.attach(await self._server_name())

    async def _server_name(self) -> str:
        """The notification server's unique bus name (``:1.42``), or "" when unknown."""
        bus = getattr(getattr(self._dn, "_backend", None), "bus", None)
        if bus is None:
            return ""
        try:
            from dbus_fast import Message as BusMessage
            from dbus_fast import MessageType

            reply = await asyncio.wait_for(bus.call(BusMessage(
                destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus", member="GetNameOwner", signature="s",
                body=["org.freedesktop.Notifications"],
            )), PROBE_TIMEOUT)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - without it, only this run's ids are used
            log.debug("cannot ask who owns org.freedesktop.Notifications: %s", exc)
            return ""
        ok = reply.message_type == MessageType.METHOD_RETURN and reply.body
        return str(reply.body[0]) if ok else ""

    def _warn(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("desktop notifications unavailable (%s); showing messages in the log", why)

    async def show(self, items: Sequence[Stored]) -> None:
        """Send each item to the notification server; what it cannot take goes to the log."""
        failed: list[Stored] = []
        for item in items:
            if event_of(item.message) != "message":
                if not await self._close(item):
                    failed.append(item)  # the log shows the clear/delete instead
            elif self._dn is not None:
                if item.message.extra.get("realert"):  # a NEW notification, not an update
                    await self._close(item)
                if not await self._send(item):
                    failed.append(item)
            elif self._plyer is not None:
                if not await asyncio.to_thread(self._plyer_send, item.message):
                    failed.append(item)
                elif item.seq:
                    self._on_event(item.message.id, "displayed")
            else:
                failed.append(item)
        self._memory.save()
        if failed:
            if self.available:
                self._warn("the notification server did not accept a notification")
            await self._fallback.show(failed)

    async def _send(self, item: Stored, *, update: bool = False) -> bool:
        import desktop_notifier as dn

        msg, mid = item.message, item.message.id
        dispatched = False

        def on_dispatched() -> None:
            nonlocal dispatched
            dispatched = True

        key = (msg.topic, sequence_key(msg))

        def on_clicked() -> None:
            self._open(msg.click)
            self._gone(key)
            self._event(item, "clicked")

        def on_dismissed() -> None:
            self._gone(key)
            self._event(item, "dismissed")

        icon = await self._icon(msg)
        path, mime = self._files.get(mid, (None, ""))
        image = path is not None and mime.startswith("image/")
        notification = dn.Notification(
            title=clean(msg.title or msg.topic, self._cfg.max_title, markup=False, oneline=True),
            message=self._body(msg),
            urgency=dn.Urgency(urgency_name(msg.priority)),
            icon=dn.Icon(path=icon) if icon is not None else None,
            buttons=tuple(self._buttons(item, None if image else path, mime)),
            attachment=dn.Attachment(path=path) if image else None,
            sound=dn.DEFAULT_SOUND if msg.priority >= 5 and self._cfg.sound else None,
            on_dispatched=on_dispatched,
            on_clicked=on_clicked,
            on_dismissed=on_dismissed,
        )
        await self._notify(notification, key)
        if dispatched:
            mapping = self._mapping()
            pid = mapping.inverse.get(notification.identifier) if mapping is not None else None
            if isinstance(pid, int):
                self._memory.put(*key, pid)
            old = self._screen.get(key)
            self._showing.pop(old or "", None)
            self._screen[key] = notification.identifier
            self._showing[notification.identifier] = mid
            self._screen.move_to_end(key)
            while len(self._screen) > SCREEN_KEEP:
                self._showing.pop(self._screen.popitem(last=False)[1], None)
            if not update and not msg.extra.get("realert"):
                self._event(item, "displayed")
                if path is None and mid in self._files:  # it arrived while this was sent
                    self._spawn(self._send(item, update=True))
        log.debug("notification for %s dispatched=%s", mid, dispatched)
        return dispatched

    def _body(self, msg: Message) -> str:
        if not markdown.is_markdown(msg.content_type):
            return clean(msg.message, self._cfg.max_body, markup=self._markup)
        text = clean(msg.message, self._cfg.max_body, markup=False)
        return markdown.to_markup(text) if self._markup else markdown.to_plain(text)

    async def _icon(self, msg: Message) -> Path | None:
        url = safe_url(msg.extra.get("icon") if msg.extra else None)
        if url is None or self._icons is None:
            return None
        return await self._icons.get(url)

    def _mapping(self) -> Any:
        """desktop-notifier's D-Bus id ↔ identifier map (None on other backends)."""
        backend = getattr(self._dn, "_backend", None)
        return getattr(backend, "_platform_to_interface_notification_identifier", None)

    def _gone(self, key: tuple[str, str]) -> None:
        """The user closed the notification of ``key``: nothing of it to replace or close."""
        self._screen.pop(key, None)
        self._memory.forget(*key)
        self._memory.save()

    async def _notify(self, notification: Any, key: tuple[str, str]) -> None:
        """Send ``notification``; in place of the sequence's notification if one is still on
        screen (its D-Bus id, from this run or the last one, passed as ``replaces_id``).

        One send at a time (``_notify_lock``): an attachment's update is sent from its own
        task while the hand-off may be sending, and a send must never go out through the
        ``call_notify`` that another one patched with its id."""
        async with self._notify_lock:
            backend: Any = getattr(self._dn, "_backend", None)
            mapping = self._mapping()
            iface = getattr(backend, "interface", None)
            replaces = self._screen.get(key)
            pid = mapping.inverse.get(replaces) if mapping is not None and replaces else None
            if pid is None and mapping is not None:
                pid = self._memory.get(*key)  # shown by an earlier run of the agent
            if pid is None or iface is None or not hasattr(iface, "call_notify"):
                await self._dn.send_notification(notification)
                return
            if replaces is not None and replaces in mapping.inverse:
                del mapping.inverse[replaces]  # the new identifier takes the same D-Bus id
                backend._notification_cache.pop(replaces, None)
            original = iface.call_notify

            async def notify(app: str, _replaces_id: int, *rest: Any) -> Any:
                return await original(app, pid, *rest)

            iface.call_notify = notify
            try:
                await self._dn.send_notification(notification)
            finally:
                iface.call_notify = original

    async def close(self, items: Sequence[Stored]) -> None:
        """Close the notifications of ``items`` that are on screen (handled on another of
        the user's devices): ``CloseNotification``, which dunst and the others report as
        closed by the application (reason 3), so no ``dismissed`` comes back from it."""
        for item in items:
            key = (item.message.topic, sequence_key(item.message))
            if self._showing.get(self._screen.get(key, "")) not in (None, item.message.id):
                continue  # a later message of its sequence replaced it on screen: keep that
            if key in self._screen or self._memory.get(*key) is not None:
                await self._close(item)
        self._memory.save()

    async def _close(self, item: Stored) -> bool:
        """A clear or delete: close the sequence's notification if this run or the last one
        shows it."""
        msg = item.message
        key = (msg.topic, sequence_key(msg))
        identifier = self._screen.pop(key, None)
        earlier = self._memory.get(*key)
        self._memory.forget(*key)
        if self._dn is None:
            return self._plyer is not None  # plyer cannot close; nothing to log either
        mapping = self._mapping()
        if identifier is not None and (mapping is None or identifier in mapping.inverse):
            await self._dn.clear(identifier)
        elif earlier is not None:  # shown by an earlier run: close it by its D-Bus id
            await self._close_id(earlier)
        log.debug("%s for %s/%s: closed=%s", event_of(msg), msg.topic, sequence_key(msg),
                  identifier is not None or earlier is not None)  # fmt: skip
        return True

    async def _close_id(self, pid: int) -> None:
        iface: Any = getattr(getattr(self._dn, "_backend", None), "interface", None)
        if iface is None or not hasattr(iface, "call_close_notification"):
            return
        try:
            await asyncio.wait_for(iface.call_close_notification(pid), PROBE_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - already closed, or the server went away
            log.debug("CloseNotification(%d): %s", pid, exc)

    def _buttons(self, item: Stored, file: Path | None = None, mime: str = "") -> list[Any]:
        import desktop_notifier as dn

        buttons = []
        if ackcore.required(item.message):  # acknowledge-until-acked (agent.realert)
            buttons.append(dn.Button(title=ACK_LABEL, on_pressed=self._acknowledged(item)))
        if file is not None:
            for title in files.file_buttons(mime):
                buttons.append(dn.Button(title=title, on_pressed=self._file(item, file, title)))
        for action in item.message.actions[:3]:
            kind, label = action.get("action"), str(action.get("label") or "")[:40]
            if not label:
                continue
            if kind == "copy":
                usable = isinstance(action.get("value"), str) and clipboard.command() is not None
            else:
                usable = kind in ("view", "http") and safe_url(action.get("url")) is not None
            if usable:
                title = clean(label, 40, markup=False)
                buttons.append(dn.Button(title=title, on_pressed=self._pressed(item, action)))
        return buttons

    def _pressed(self, item: Stored, action: dict[str, Any]) -> Callable[[], None]:
        def pressed() -> None:
            if action.get("action") == "copy":
                self._spawn(clipboard.copy(str(action.get("value"))))
            elif action.get("action") == "http":
                self._spawn(self._http(action))
            else:
                self._open(action.get("url"))
            self._event(item, "clicked")

        return pressed

    def _acknowledged(self, item: Stored) -> Callable[[], None]:
        def pressed() -> None:
            # not _gone(): the notification may stay on screen after its button (dunst keeps
            # it), and the service closes it once the acknowledgement is recorded
            self._event(item, "acknowledged")

        return pressed

    def _file(self, item: Stored, path: Path, title: str) -> Callable[[], None]:
        def pressed() -> None:
            if title == files.SAVE:
                name = str((item.message.attachment or {}).get("name") or "")
                folder = self._cfg.downloads or downloads_dir()
                self._spawn(files.save(path, folder, name))
            else:  # Open, Play
                self._spawn(files.open_path(self._cfg.opener, path))
            self._event(item, "clicked")

        return pressed

    def _event(self, item: Stored, state: str) -> None:
        if item.seq:  # burst summaries are not stored messages
            self._on_event(item.message.id, state)

    def _open(self, url: str | None) -> None:
        url = safe_url(url)
        if url is not None:
            self._spawn(self._open_url(url))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open_url(self, url: str) -> None:
        if self._cfg.opener:
            proc = await asyncio.create_subprocess_exec(*self._cfg.opener, url)
            await proc.wait()
            return
        import webbrowser

        if not await asyncio.to_thread(webbrowser.open, url):
            log.warning("no browser could open %s", url)

    @staticmethod
    async def _http(action: dict[str, Any]) -> None:
        """ntfy's http action: its request, sent; a WARNING naming the action when it cannot
        be (only the url's scheme was checked before its button showed: the rest comes from
        the publisher as it is)."""
        url = safe_url(action.get("url"))
        if url is None:
            return
        label, body, headers = action.get("label"), action.get("body"), action.get("headers")
        if headers is not None and not isinstance(headers, dict):
            log.warning("action %r: cannot send its request: headers is not an object", label)
            return

        def send() -> int:
            req = urllib.request.Request(  # noqa: S310 - scheme checked by safe_url
                url,
                data=str(body).encode() if body is not None else None,
                method=str(action.get("method") or "POST").upper(),
                headers={str(k): str(v) for k, v in (headers or {}).items()},
            )
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
                return int(resp.status)

        try:
            status = await asyncio.to_thread(send)
            log.info("action %r: %s answered %s", label, url, status)
        except OSError as exc:
            log.warning("action %r: request to %s failed: %s", label, url, exc)
        except (ValueError, http.client.HTTPException) as exc:  # UnicodeError, InvalidURL too
            # a header value with a newline, a method with a control character, a host
            # that is none ("http://[::1"): http.client refuses them before sending
            log.warning("action %r: cannot send its request to %s: %s", label, url[:100], exc)

    def _plyer_send(self, msg: Message) -> bool:
        try:
            self._plyer.notification.notify(
                title=clean(msg.title or msg.topic, self._cfg.max_title, markup=False),
                message=clean(msg.message, self._cfg.max_body, markup=False),
                app_name="edgepush",
            )
        except Exception as exc:  # noqa: BLE001 - plyer raises anything, NotImplementedError to OSError
            self._warn(f"plyer: {exc}")
            self._plyer = None
            return False
        return True
