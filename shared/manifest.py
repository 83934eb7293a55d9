"""The Storage Box manifest: the commit point of a published pair.

The reloader writes the two files first and ``certflow-manifest.json`` last; readers use the files
only when their digests match the manifest. Installed copies on a node carry a manifest of the same
shape. Pure data + (de)serialisation; no filesystem access here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from shared.certs import LeafInfo
from shared.digests import Digests
from shared.errors import ManifestInvalid

MANIFEST_NAME = "certflow-manifest.json"
SCHEMA = 1


@dataclass(frozen=True, slots=True)
class FileEntry:
    name: str
    md5: str
    sha256: str
    size: int

    @classmethod
    def of(cls, name: str, data: bytes) -> FileEntry:
        d = Digests.of(data)
        return cls(name=name, md5=d.md5, sha256=d.sha256, size=d.size)

    def matches(self, data: bytes) -> bool:
        d = Digests.of(data)
        return d.sha256 == self.sha256 and d.md5 == self.md5 and d.size == self.size


@dataclass(frozen=True, slots=True)
class Manifest:
    generation: int
    published_at: datetime
    cert: FileEntry
    key: FileEntry
    leaf: LeafInfo
    publisher: str = ""

    @property
    def fingerprint(self) -> str:
        return self.leaf.fingerprint_sha256

    def matches(self, cert: bytes, key: bytes) -> bool:
        """True when both files are exactly the ones this manifest committed."""
        return self.cert.matches(cert) and self.key.matches(key)

    def to_json(self) -> bytes:
        leaf = asdict(self.leaf)
        leaf["sans"] = list(self.leaf.sans)
        leaf["not_before"] = self.leaf.not_before.isoformat()
        leaf["not_after"] = self.leaf.not_after.isoformat()
        doc: dict[str, Any] = {
            "schema": SCHEMA,
            "generation": self.generation,
            "published_at": self.published_at.isoformat(),
            "publisher": self.publisher,
            "files": {"cert": asdict(self.cert), "key": asdict(self.key)},
            "leaf": leaf,
        }
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            doc = json.loads(raw)
            if doc.get("schema") != SCHEMA:
                raise ManifestInvalid(f"unsupported manifest schema {doc.get('schema')!r}")
            leaf = doc["leaf"]
            generation = int(doc["generation"])
            if generation < 1:
                raise ManifestInvalid(f"generation must be >= 1, got {generation}")
            return cls(
                generation=generation,
                published_at=datetime.fromisoformat(doc["published_at"]),
                publisher=str(doc.get("publisher", "")),
                cert=FileEntry(**doc["files"]["cert"]),
                key=FileEntry(**doc["files"]["key"]),
                leaf=LeafInfo(
                    serial=str(leaf["serial"]),
                    subject=str(leaf["subject"]),
                    issuer=str(leaf["issuer"]),
                    sans=tuple(leaf["sans"]),
                    not_before=datetime.fromisoformat(leaf["not_before"]),
                    not_after=datetime.fromisoformat(leaf["not_after"]),
                    fingerprint_sha256=str(leaf["fingerprint_sha256"]),
                ),
            )
        except ManifestInvalid:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ManifestInvalid(f"manifest does not parse: {type(exc).__name__}: {exc}") from None
