"""Coordinator fan-out: time to ask 50 peer distributors for their /health.

    .venv/bin/python -m bench.distributor_fanout [--peers 50] [--rounds 20]

Two setups: 50 real HTTP servers on loopback (stdlib, each serving a distributor /health body),
and an httpx MockTransport with a simulated per-peer network delay. Both go through the real
``peers.fan_out`` (one httpx.AsyncClient, all requests concurrent).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from services.distributor.facts import DistributorInfo
from services.distributor.peers import PeerAnswer, fan_out, health_url


def body_for(index: int) -> bytes:
    info = DistributorInfo(
        node_id=f"node{index}", hostname=f"h{index}", fingerprint="F", generation=9
    )
    return json.dumps({"status": "ok", "info": info.model_dump(mode="json")}).encode()


def start_servers(count: int) -> list[ThreadingHTTPServer]:
    servers = []
    for index in range(count):
        payload = body_for(index)

        class Handler(BaseHTTPRequestHandler):
            body = payload

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(self.body)))
                self.end_headers()
                self.wfile.write(self.body)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    return servers


def timed(rounds: int, run: Callable[[], list[PeerAnswer]]) -> list[float]:
    values = []
    for _ in range(rounds):
        started = time.perf_counter()
        answers = run()
        values.append((time.perf_counter() - started) * 1000)
        bad = [a for a in answers if not isinstance(a, DistributorInfo)]
        if bad:
            raise SystemExit(f"fan-out failed: {bad[:3]}")
    return values


def row(label: str, values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"{label:<44} {statistics.median(values):>8.1f} {p95:>8.1f} {max(values):>8.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    servers = start_servers(args.peers)
    urls = [health_url("127.0.0.1", s.server_address[1]) for s in servers]
    print(f"coordinator fan-out over {args.peers} distributors ({args.rounds} rounds)")
    print(f"{'setup':<44} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    try:
        print(
            row(
                f"{args.peers} real HTTP servers on loopback",
                timed(args.rounds, lambda: fan_out(urls)),
            )
        )
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
    for delay in (0.0, 0.05):

        async def handler(request: httpx.Request, delay: float = delay) -> httpx.Response:
            await asyncio.sleep(delay)
            index = int(request.url.host.rsplit(".", 1)[1])
            return httpx.Response(200, content=body_for(index))

        mock_urls = [health_url(f"10.0.{i // 250}.{i % 250}", 8080) for i in range(args.peers)]
        transport = httpx.MockTransport(handler)
        print(
            row(
                f"MockTransport, {delay * 1000:.0f} ms per peer",
                timed(args.rounds, functools.partial(fan_out, mock_urls, transport=transport)),
            )
        )


if __name__ == "__main__":
    main()
