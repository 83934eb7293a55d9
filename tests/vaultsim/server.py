"""The double's process: TLS listener, request threads, SIGHUP certificate reload, SIGTERM stop.

Each accepted connection is wrapped with the TLS context current at accept time, so a SIGHUP swaps
the certificate for new connections without touching the seal state, as Vault does on SIGHUP.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from tests.vaultsim.core import Options, Reply, VaultCore

_LOG_LOCK = threading.Lock()


def log(event: str, **fields: Any) -> None:
    """One JSON line per event on stderr (never request bodies: they carry key shares)."""
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event, **fields}
    # One write per line under a lock: the server is threaded, and print() writes the text and
    # the newline separately, so two requests could otherwise share a line.
    with _LOG_LOCK:
        sys.stderr.write(json.dumps(line) + "\n")
        sys.stderr.flush()


def load_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


class SimServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], core: VaultCore, context: ssl.SSLContext, *, verbose: bool
    ) -> None:
        self.core = core
        self.context = context
        self.verbose = verbose
        super().__init__(address, Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The handshake runs in the request thread so one slow client cannot block accept().
        raw: socket.socket = request
        raw.settimeout(10)
        try:
            tls = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        try:
            Handler(tls, client_address, self)
        except (ssl.SSLError, OSError):
            pass
        finally:
            with contextlib.suppress(OSError):
                tls.close()

    def shutdown_request(self, request: Any) -> None:
        with contextlib.suppress(OSError):
            request.close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like Vault's Go server
    server: SimServer
    server_version = "vaultsim"
    sys_version = ""

    def _dispatch(self) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self.server.core.handle(self.command, path, query, headers, body)
        self._send(reply)
        if self.server.verbose:
            log("vaultsim.request", method=self.command, path=path, status=reply.status)

    def _send(self, reply: Reply) -> None:
        payload = b"" if reply.body is None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        if reply.status != 204:
            # exactly this value: hvac only reads the errors list then
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _dispatch
    do_LIST = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the default access log goes to stderr for every request."""


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.vaultsim",
        description="A protocol-level Vault/OpenBao double over TLS (a test stand-in, not Vault).",
    )
    parser.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 8200))
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("VAULTSIM_DATA", "/vault/file")),
        help="state directory (default $VAULTSIM_DATA or /vault/file)",
    )
    parser.add_argument("--tls-cert", type=Path, required=True, help="certificate (+chain) PEM")
    parser.add_argument("--tls-key", type=Path, required=True, help="private key PEM")
    parser.add_argument("--flavor", choices=("vault", "openbao"), default="vault")
    parser.add_argument("--version", default="", help="reported version (1.19.0 / 2.6.2)")
    parser.add_argument(
        "--wrong-key-status",
        type=int,
        choices=(400, 500),
        default=None,
        help="status of a wrong key at the threshold (default: 400 on Vault >= 1.13, else 500)",
    )
    parser.add_argument("--role", choices=("active", "standby", "perfstandby"), default="active")
    parser.add_argument(
        "--root-token", default=None, help="root token to hand out at init (default: random)"
    )
    parser.add_argument(
        "--root-token-file", type=Path, default=None, help="read --root-token from this file"
    )
    parser.add_argument(
        "--shares", type=int, default=None, help="initialize at start with this many shares"
    )
    parser.add_argument("--threshold", type=int, default=None, help="threshold for --shares")
    parser.add_argument(
        "--init-output",
        type=Path,
        default=None,
        help="where the start-up init writes `vault operator init -format=json` (0600; "
        "default DATA/init.json)",
    )
    parser.add_argument("--log-requests", action="store_true", help="log method, path, status")
    return parser


def _init_at_start(core: VaultCore, args: argparse.Namespace) -> None:
    shares = args.shares
    threshold = args.threshold if args.threshold is not None else shares
    result = core.initialize(shares, threshold)
    keys = [bytes.fromhex(k) for k in result["keys"]]
    document = {
        "unseal_keys_b64": [base64.b64encode(k).decode() for k in keys],
        "unseal_keys_hex": result["keys"],
        "unseal_shares": shares,
        "unseal_threshold": threshold,
        "recovery_keys_b64": [],
        "recovery_keys_hex": [],
        "recovery_keys_shares": 0,
        "recovery_keys_threshold": 0,
        "root_token": result["root_token"],
    }
    target: Path = args.init_output or args.data / "init.json"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(document, out, indent=2)
    log("vaultsim.initialized", shares=shares, threshold=threshold, output=str(target))


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    root_token = args.root_token
    if args.root_token_file is not None:
        root_token = args.root_token_file.read_text(encoding="utf-8").strip()
    options = Options(
        flavor=args.flavor,
        version=args.version,
        wrong_key_status=args.wrong_key_status,
        role=args.role,
        root_token=root_token,
    )
    args.data.mkdir(parents=True, exist_ok=True)
    core = VaultCore(args.data, options)
    if args.shares is not None and not core.initialized:
        _init_at_start(core, args)
    try:
        context = load_context(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        log("vaultsim.tls_error", error=str(exc))
        return 1
    server = SimServer(args.listen, core, context, verbose=args.log_requests)
    stop = threading.Event()

    def on_term(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        # Vault keeps serving the old certificate if the new files are unusable.
        try:
            server.context = load_context(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            log("vaultsim.tls_reload_failed", error=str(exc))
            return
        log("vaultsim.tls_reloaded", cert=str(args.tls_cert), sealed=core.sealed)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGHUP, on_hup)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    host, port = str(server.server_address[0]), int(server.server_address[1])
    log(
        "vaultsim.listening",
        address=f"{host}:{port}",
        flavor=options.flavor,
        version=core.version,
        initialized=core.initialized,
        sealed=core.sealed,
        pid=os.getpid(),
    )
    try:
        while not stop.wait(0.2):
            pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        log("vaultsim.stopped")
    return 0
