"""The double's protocol logic: one Vault process's seal state and its HTTP answers.

No sockets here: :meth:`VaultCore.handle` takes a method, path, query and body and returns a
:class:`Reply`, so the behaviour is testable without TLS and the server stays a thin shell.
Only hashes of the root key and root token are persisted, never the key shares.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from tests.vaultsim import shamir

Json = dict[str, Any]

MIN_KEY, MAX_KEY = 16, 33  # barrier key range plus the Shamir overhead byte
_HEX = re.compile(r"\A(?:[0-9a-fA-F]{2})*\Z")
_KEY_MISSING = "'key' must be specified in request body as JSON, or 'reset' set to true"
_KEY_FORMAT = "'key' must be a valid hex or base64 string"
_DECRYPT_FAILED = "failed to decrypt keys from storage: cipher: message authentication failed"

VAULT_CODES = (
    "activecode",
    "standbycode",
    "drsecondarycode",
    "performancestandbycode",
    "haunhealthycode",
    "removedcode",
    "sealedcode",
    "uninitcode",
)
OPENBAO_CODES = ("activecode", "standbycode", "sealedcode", "uninitcode")
_DEFAULT_CODES = {
    "activecode": 200,
    "standbycode": 429,
    "drsecondarycode": 472,
    "performancestandbycode": 473,
    "haunhealthycode": 474,
    "removedcode": 530,
    "sealedcode": 503,
    "uninitcode": 501,
}
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


@dataclass
class Reply:
    status: int
    body: Json | None = None  # None: no body (204, HEAD)
    headers: dict[str, str] = field(default_factory=dict)


def _errors(status: int, *messages: str) -> Reply:
    return Reply(status, {"errors": list(messages)})


def version_tuple(version: str) -> tuple[int, ...]:
    core = re.split(r"[+-]", version.lstrip("v"), maxsplit=1)[0]
    return tuple(int(part) for part in core.split(".") if part.isdigit())


@dataclass
class Options:
    flavor: str = "vault"  # or "openbao"
    version: str = ""
    wrong_key_status: int | None = None  # None: by flavor and version
    role: str = "active"  # or "standby", "perfstandby" (what an unsealed node is)
    root_token: str | None = None  # fixed root token for init (tests); random otherwise

    def resolved_version(self) -> str:
        return self.version or ("2.6.2" if self.flavor == "openbao" else "1.19.0")

    def resolved_wrong_key_status(self) -> int:
        if self.wrong_key_status is not None:
            return self.wrong_key_status
        if self.flavor == "openbao":
            return 500
        return 400 if version_tuple(self.resolved_version()) >= (1, 13) else 500


class VaultCore:
    """State of one double process. Thread-safe: the server handles requests in threads."""

    def __init__(self, data_dir: Path, options: Options) -> None:
        self.data_dir = data_dir
        self.options = options
        self.version = options.resolved_version()
        self._lock = threading.Lock()
        self._state_file = data_dir / "state.json"
        self._state_stamp: tuple[int, int] | None = None
        self._state: Json = self._load()
        self.sealed = True  # a restarted Vault process always starts sealed
        self._shares: list[bytes] = []
        self._nonce = ""

    # -- persistence -----------------------------------------------------------------------
    def _load(self) -> Json:
        try:
            stat = self._state_file.stat()
            state: Json = json.loads(self._state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"initialized": False}
        self._state_stamp = (stat.st_mtime_ns, stat.st_ino)
        return state

    def _refresh(self) -> None:
        """Pick up an init done by another process on the same data directory.

        Replicas of one Vault share storage, so an init through one is seen by all. A different
        root key (a re-init) seals this process: its unseal state belonged to the old key.
        """
        try:
            stat = self._state_file.stat()
        except FileNotFoundError:
            return
        if (stat.st_mtime_ns, stat.st_ino) == self._state_stamp:
            return
        previous_key = self._state.get("key_sha256")
        try:
            self._state = self._load()
        except ValueError:
            return  # caught mid-replace by another writer: read it next time
        if self._state.get("key_sha256") != previous_key:
            self.sealed = True
            self._shares, self._nonce = [], ""

    def _save(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # random name: replicas in containers share the directory and may all be PID 1
        tmp = self._state_file.with_name(f".state.{secrets.token_hex(6)}.tmp")
        tmp.write_text(json.dumps(self._state), encoding="utf-8")
        os.replace(tmp, self._state_file)
        stat = self._state_file.stat()
        self._state_stamp = (stat.st_mtime_ns, stat.st_ino)

    @property
    def initialized(self) -> bool:
        return bool(self._state.get("initialized"))

    # -- documents -------------------------------------------------------------------------
    def seal_status(self) -> Json:
        initialized = self.initialized
        doc: Json = {
            "type": "shamir",
            "initialized": initialized,
            "sealed": self.sealed,
            "t": int(self._state.get("t", 0)) if initialized else 0,
            "n": int(self._state.get("n", 0)) if initialized else 0,
            "progress": len(self._shares),
            "nonce": self._nonce,
            "version": self.version,
        }
        openbao = self.options.flavor == "openbao"
        date_field = (
            "commit_date" if openbao and version_tuple(self.version) >= (2, 6) else "build_date"
        )
        doc[date_field] = "2026-01-01T00:00:00Z"
        doc["migration"] = False
        doc["recovery_seal"] = False
        doc["storage_type"] = "file"
        if not openbao:
            doc["removed_from_cluster"] = False
        if initialized and not self.sealed:
            doc["cluster_name"] = self._state["cluster_name"]
            doc["cluster_id"] = self._state["cluster_id"]
        return doc

    # -- dispatch --------------------------------------------------------------------------
    def handle(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> Reply:
        routes = {
            "/v1/sys/seal-status": ({"GET"}, self._seal_status),
            "/v1/sys/unseal": ({"PUT", "POST"}, self._unseal),
            "/v1/sys/health": ({"GET", "HEAD"}, self._health),
            "/v1/sys/init": ({"GET", "PUT", "POST"}, self._init),
            "/v1/sys/seal": ({"PUT", "POST"}, self._seal),
        }
        route = routes.get(path.rstrip("/") or path)
        if route is None:
            return _errors(404)
        methods, handler = route
        if method not in methods:
            return _errors(405)
        with self._lock:
            self._refresh()
            reply = handler(method, query, headers, body)
        if method == "HEAD":
            reply.body = None
        return reply

    def _seal_status(self, _m: str, _q: str, _h: dict[str, str], _b: bytes) -> Reply:
        return Reply(200, self.seal_status())

    # -- unseal ----------------------------------------------------------------------------
    def _unseal(self, _m: str, _q: str, _h: dict[str, str], body: bytes) -> Reply:
        openbao = self.options.flavor == "openbao"
        fields: Json = {}
        if not body.strip():
            if not openbao:
                return _errors(400, "EOF")
        else:
            try:
                parsed = json.loads(body)
            except (ValueError, UnicodeDecodeError) as exc:
                return _errors(400, f"failed to parse JSON input: {type(exc).__name__}")
            if not isinstance(parsed, dict):
                return _errors(
                    400, "failed to parse JSON input: json: cannot unmarshal into UnsealRequest"
                )
            # Go's decoder matches untagged struct fields case-insensitively (`Key` works too).
            for name, value in parsed.items():
                fields.setdefault(str(name).lower(), value)
        reset, key = fields.get("reset", False), fields.get("key", "")
        if not isinstance(reset, bool) or not isinstance(key, str):
            return _errors(400, "failed to parse JSON input: json: cannot unmarshal field")
        if reset:
            if not self.sealed:
                return _errors(400, "vault is unsealed")
            self._shares, self._nonce = [], ""
            return Reply(200, self.seal_status())
        if not key:
            return _errors(400, _KEY_MISSING)
        share = _decode_key(key)
        if share is None:
            return _errors(400, _KEY_FORMAT)
        if not self.initialized:
            return _errors(400, "Vault is not initialized")
        length_error = _length_error(share)
        if not openbao and length_error:
            return _errors(400, length_error)
        if not self.sealed:
            return Reply(200, self.seal_status())
        if length_error:
            return _errors(400, length_error)
        if not self._shares:
            self._nonce = str(uuid.uuid4())
        if share not in self._shares:  # a byte-identical share is silently ignored
            self._shares.append(share)
        threshold = int(self._state["t"])
        if len(self._shares) < threshold:
            return Reply(200, self.seal_status())
        collected, self._shares, self._nonce = self._shares, [], ""
        try:
            candidate = collected[0] if threshold == 1 else shamir.combine(collected)
        except shamir.CombineError as exc:
            return _errors(400, f"invalid key: failed to compute combined key: {exc}")
        digest = hashlib.sha256(candidate).hexdigest()
        if not hmac.compare_digest(digest, str(self._state["key_sha256"])):
            status = self.options.resolved_wrong_key_status()
            if status == 400:
                return _errors(400, f"invalid key: {_DECRYPT_FAILED}")
            return _errors(status, f"unable to retrieve stored keys: {_DECRYPT_FAILED}")
        self.sealed = False
        return Reply(200, self.seal_status())

    # -- health ----------------------------------------------------------------------------
    def _health(self, _m: str, query: str, _h: dict[str, str], _b: bytes) -> Reply:
        openbao = self.options.flavor == "openbao"
        params = parse_qs(query, keep_blank_values=True)
        codes = dict(_DEFAULT_CODES)
        for name in OPENBAO_CODES if openbao else VAULT_CODES:
            if name in params:
                try:
                    codes[name] = int(params[name][0])
                except ValueError:
                    return _errors(400)
        flags: dict[str, bool] = {}
        for name in ("standbyok",) if openbao else ("standbyok", "perfstandbyok"):
            raw = params.get(name, [""])[0]
            if raw in _TRUE:
                flags[name] = True
            elif raw in _FALSE or raw == "":
                flags[name] = False
            else:
                return _errors(400, f"bad value for {name} parameter")
        role = self.options.role
        perf = role == "perfstandby" and not openbao
        standby = self.sealed or role != "active"
        if not self.initialized:
            code = codes["uninitcode"]
        elif self.sealed:
            code = codes["sealedcode"]
        elif perf:
            code = (
                codes["activecode"]
                if flags.get("perfstandbyok")
                else codes["performancestandbycode"]
            )
        elif role == "standby":
            code = codes["activecode"] if flags.get("standbyok") else codes["standbycode"]
        else:
            code = codes["activecode"]
        replication = "unknown" if self.sealed else "disabled"
        doc: Json = {"initialized": self.initialized, "sealed": self.sealed, "standby": standby}
        if not openbao:
            doc["performance_standby"] = perf and not self.sealed
        doc["replication_performance_mode"] = replication
        doc["replication_dr_mode"] = replication
        doc["server_time_utc"] = int(time.time())
        doc["version"] = self.version
        if not openbao:
            doc.update(enterprise=False, echo_duration_ms=0, clock_skew_ms=0)
            doc["replication_primary_canary_age_ms"] = 0
        if self.initialized and not self.sealed:
            doc["cluster_name"] = self._state["cluster_name"]
            doc["cluster_id"] = self._state["cluster_id"]
        return Reply(code, doc)

    # -- init ------------------------------------------------------------------------------
    def _init(self, method: str, _q: str, _h: dict[str, str], body: bytes) -> Reply:
        if method == "GET":
            return Reply(200, {"initialized": self.initialized})
        try:
            request = json.loads(body) if body.strip() else {}
        except (ValueError, UnicodeDecodeError) as exc:
            return _errors(400, f"failed to parse JSON input: {type(exc).__name__}")
        if not isinstance(request, dict):
            return _errors(400, "failed to parse JSON input: json: cannot unmarshal")
        if self.initialized:
            return _errors(400, "Vault is already initialized")
        recovery = [k for k in ("recovery_shares", "recovery_threshold") if request.get(k)]
        if recovery:
            return _errors(
                400, f"parameters {','.join(recovery)} not applicable to seal type shamir"
            )
        if request.get("pgp_keys") or request.get("root_token_pgp_key"):
            return _errors(400, "the Vault double does not support PGP-encrypted keys")
        shares, threshold = request.get("secret_shares"), request.get("secret_threshold")
        if not isinstance(shares, int) or not isinstance(threshold, int):
            return _errors(400, "secret_shares and secret_threshold must be integers")
        problem = _seal_config_error(shares, threshold)
        if problem:
            return _errors(400, f"invalid seal configuration: {problem}")
        result = self.initialize(shares, threshold)
        return Reply(200, result)

    def initialize(self, shares: int, threshold: int) -> Json:
        """Create the root key and its shares; persist only hashes. Stays sealed (as Vault)."""
        root_key = secrets.token_bytes(32)
        parts = [root_key] if shares == 1 else shamir.split(root_key, shares, threshold)
        prefix = "s." if self.options.flavor == "openbao" else "hvs."
        token = self.options.root_token or prefix + secrets.token_urlsafe(18)
        flavor = "openbao" if self.options.flavor == "openbao" else "vault"
        self._state = {
            "initialized": True,
            "t": threshold,
            "n": shares,
            "key_sha256": hashlib.sha256(root_key).hexdigest(),
            "root_token_sha256": hashlib.sha256(token.encode()).hexdigest(),
            "cluster_name": f"{flavor}-cluster-{secrets.token_hex(4)}",
            "cluster_id": str(uuid.uuid4()),
        }
        self._save()
        self.sealed = True
        return {
            "keys": [part.hex() for part in parts],
            "keys_base64": [base64.b64encode(part).decode() for part in parts],
            "root_token": token,
        }

    # -- seal ------------------------------------------------------------------------------
    def _seal(self, _m: str, _q: str, headers: dict[str, str], _b: bytes) -> Reply:
        if self.sealed:
            return Reply(204)
        token = headers.get("x-vault-token", "")
        digest = hashlib.sha256(token.encode()).hexdigest()
        if not token or not hmac.compare_digest(digest, str(self._state["root_token_sha256"])):
            return _errors(403, "permission denied")
        self.sealed = True
        self._shares, self._nonce = [], ""
        return Reply(204)


def _decode_key(key: str) -> bytes | None:
    """Hex first; base64 when hex fails or gives a length outside the barrier range."""
    if _HEX.match(key):
        decoded = bytes.fromhex(key)
        if MIN_KEY <= len(decoded) <= MAX_KEY:
            return decoded
    try:
        return base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return None


def _length_error(key: bytes) -> str:
    if len(key) < MIN_KEY:
        return f"invalid key: key is shorter than minimum {MIN_KEY} bytes"
    if len(key) > MAX_KEY:
        return f"invalid key: key is longer than maximum {MAX_KEY} bytes"
    return ""


def _seal_config_error(shares: int, threshold: int) -> str:
    if shares < 1:
        return "shares must be at least one"
    if threshold < 1:
        return "threshold must be at least one"
    if shares > 1 and threshold == 1:
        return "threshold must be greater than one for multiple shares"
    if shares > 255:
        return "shares must be less than 256"
    if threshold > shares:
        return "threshold cannot be larger than shares"
    return ""
