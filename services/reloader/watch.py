"""Sources of "something may have changed": inotify (watchdog) and a periodic timer.

Watching is kept apart from acting: :meth:`ChangeWatcher.wait` returns *why* the loop should look
again (a debounced change, the timer, or stop) and the loop calls one idempotent reconcile. certbot
writes four archive files and swaps four symlinks within milliseconds; the quiet-period debounce
turns that burst into one wake-up, so one renewal is one publish. A missed event costs at most one
check interval.
"""

from __future__ import annotations

import threading
import time
from enum import StrEnum
from pathlib import Path

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from shared.logs import get_logger

_log = get_logger(__name__)
# Opens and read-only closes are ignored: the reloader's own reads must not wake it up again.
_CHANGE_EVENTS = frozenset(
    {
        EVENT_TYPE_CREATED,
        EVENT_TYPE_DELETED,
        EVENT_TYPE_MODIFIED,
        EVENT_TYPE_MOVED,
        EVENT_TYPE_CLOSED,
    }
)
# The longest the loop sleeps without looking at the stop flag (signal handlers only set it).
_STOP_POLL = 0.2


class Wake(StrEnum):
    CHANGE = "change"
    TIMER = "timer"
    STOP = "stop"


def _text(path: bytes | str) -> str:
    return path.decode(errors="replace") if isinstance(path, bytes) else path


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: ChangeWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _CHANGE_EVENTS:
            return
        paths = [_text(event.src_path)]
        if event.dest_path:
            paths.append(_text(event.dest_path))
        if any(self._watcher.interesting(p) for p in paths):
            self._watcher.notify()


class ChangeWatcher:
    """Debounced change notifications for ``dirs`` (watched through their common ``root``)."""

    def __init__(
        self,
        root: Path,
        dirs: tuple[Path, ...],
        *,
        debounce: float,
        use_inotify: bool = True,
    ) -> None:
        self.root = root
        self._dirs = tuple(str(d) for d in dirs)
        self._debounce = debounce
        self._use_inotify = use_inotify
        self._cond = threading.Condition()
        self._pending = False
        self._last_event = 0.0
        self._observer: BaseObserver | None = None

    @property
    def watching(self) -> bool:
        return self._observer is not None

    def interesting(self, path: str) -> bool:
        return any(path == d or path.startswith(d + "/") for d in self._dirs)

    def notify(self) -> None:
        with self._cond:
            self._pending = True
            self._last_event = time.monotonic()
            self._cond.notify_all()

    def ensure_started(self) -> None:
        """Start inotify on ``root`` (recursive: certbot creates live/ and archive/ on first
        issuance). Retried on every wake-up while ``root`` does not exist yet."""
        if not self._use_inotify or self._observer is not None:
            return
        if not self.root.is_dir():
            return
        observer = Observer()
        try:
            observer.schedule(_Handler(self), str(self.root), recursive=True)
            observer.start()
        except OSError as exc:
            # e.g. inotify watch limit reached, or a mount without inotify: the timer still works.
            _log.warning("watch.unavailable", root=str(self.root), error=str(exc))
            return
        self._observer = observer
        _log.info("watch.started", root=str(self.root), dirs=list(self._dirs))
        # Anything that changed before the watch existed is picked up by an immediate check.
        self.notify()

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
            self._observer = None

    def wait(self, stop: threading.Event, timeout: float) -> Wake:
        """Block until a debounced change, ``timeout`` seconds, or ``stop``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if stop.is_set():
                    return Wake.STOP
                now = time.monotonic()
                if self._pending and now - self._last_event >= self._debounce:
                    self._pending = False
                    return Wake.CHANGE
                if now >= deadline:
                    return Wake.TIMER
                until = deadline
                if self._pending:
                    until = min(until, self._last_event + self._debounce)
                self._cond.wait(max(0.0, min(until - now, _STOP_POLL)))
