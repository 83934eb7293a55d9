"""Sources of "something may have changed": inotify (watchdog) and a periodic timer.

Watching is kept apart from acting: :meth:`ChangeWatcher.wait` returns *why* the loop should look
again (a change, the timer, or stop) and the service loop then runs its one idempotent reconcile.
An optional quiet-period debounce turns a burst of writes (certbot writes four archive files and
swaps four symlinks within milliseconds) into one wake-up. Polling stays the source of truth:
network mounts (CIFS, sshfs) deliver no events for other clients' writes, so a missed event costs
at most one timer interval.
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
# Only changes wake the loop. Watchdog also reports opens and read-only closes; the services' own
# reads of the files they watch would otherwise wake them again at once, forever.
CHANGE_EVENTS = frozenset(
    {
        EVENT_TYPE_CREATED,
        EVENT_TYPE_DELETED,
        EVENT_TYPE_MODIFIED,
        EVENT_TYPE_MOVED,
        EVENT_TYPE_CLOSED,
    }
)
# The longest a wait sleeps without looking at the stop flag (signal handlers only set it).
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
        if event.event_type not in CHANGE_EVENTS:
            return
        paths = [_text(event.src_path)]
        if event.dest_path:
            paths.append(_text(event.dest_path))
        if any(self._watcher.interesting(p) for p in paths):
            self._watcher.notify()


class ChangeWatcher:
    """Change notifications for ``dirs`` (default: ``root`` itself), watched through ``root``.

    ``recursive`` watches the whole tree under ``root`` (certbot creates live/ and archive/ on
    first issuance); a flat directory such as a Storage Box mount needs only its own entries.
    ``use_inotify=False`` leaves only the timer (polling-only mounts).
    """

    def __init__(
        self,
        root: Path,
        dirs: tuple[Path, ...] | None = None,
        *,
        debounce: float = 0.0,
        use_inotify: bool = True,
        recursive: bool = True,
    ) -> None:
        self.root = root
        self._dirs = tuple(str(d) for d in (dirs if dirs is not None else (root,)))
        self._debounce = debounce
        self._use_inotify = use_inotify
        self._recursive = recursive
        self._cond = threading.Condition()
        self._pending = False
        self._last_event = 0.0
        self._observer: BaseObserver | None = None
        self._warned = False

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

    def ensure_started(self) -> bool:
        """Start inotify on ``root`` unless it runs already; True when it runs.

        Meant to be called before every reconcile: while ``root`` does not exist yet (a mount
        not there, certbot not run) it stays off and the next call tries again. The reconcile
        that follows covers anything that changed before the watch existed.
        """
        if not self._use_inotify:
            return False
        if self._observer is not None:
            return True
        if not self.root.is_dir():
            return False
        observer = Observer()
        try:
            observer.schedule(_Handler(self), str(self.root), recursive=self._recursive)
            observer.start()
        except (OSError, RuntimeError) as exc:
            # e.g. the inotify watch limit, or a mount without inotify: the timer still works.
            if not self._warned:
                _log.warning("watch.unavailable", root=str(self.root), error=str(exc))
                self._warned = True
            return False
        self._observer = observer
        _log.info("watch.started", root=str(self.root), dirs=list(self._dirs))
        return True

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
            self._observer = None

    def wait(self, stop: threading.Event, timeout: float) -> Wake:
        """Block until a change has been quiet for the debounce period, ``timeout`` seconds
        have passed, or ``stop`` is set."""
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
