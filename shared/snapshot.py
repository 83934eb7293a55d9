"""What a directory holding a published pair was found to contain: plain data for decisions.

:func:`shared.storagebox.read_snapshot` reads it from disk; the reloader's and the distributor's
decisions read it without touching the filesystem.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from shared.errors import ManifestUnauthenticated
from shared.manifest import Manifest


class State(StrEnum):
    EMPTY = "empty"  # no manifest yet: nothing was ever published here
    COMMITTED = "committed"  # manifest and both files agree
    INCONSISTENT = "inconsistent"  # files do not match the manifest (upload in progress, damage)
    CORRUPT = "corrupt"  # the manifest itself does not parse
    UNAUTHENTICATED = "unauthenticated"  # keys are configured and its MAC does not verify


@dataclass(frozen=True, slots=True)
class Snapshot:
    state: State
    manifest: Manifest | None = None
    cert: bytes | None = None
    key: bytes | None = None
    detail: str = ""
    # Manifest authentication (only when keys are configured): the id of the key that signed the
    # manifest, or why it was refused (state UNAUTHENTICATED: nothing else was read).
    signer: str | None = None
    auth_error: ManifestUnauthenticated | None = None

    @property
    def committed(self) -> bool:
        return self.state is State.COMMITTED
