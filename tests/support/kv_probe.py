"""A Vault client that writes KV v2 secrets on a period and reports failed writes, gaps and losses.

Runs inside a container on the Vault network (``python -m tests.support.kv_probe``), with only the
standard library and httpx, so the project image can run it with this directory mounted. Each write
goes to the next address behind a DNS name (``tasks.<service>``), as a load balancer in front of
the members would send it: a member that is sealed or restarting fails that write, and the report
says so. Stops on SIGTERM, after ``--max-duration`` seconds, and writes its report as JSON to
``--out`` (and stdout). The token is read from a file and never printed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx


def _addresses(name: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return sorted({str(info[4][0]) for info in infos})


def _first_error(answer: httpx.Response) -> str:
    """Vault's first error message, short (its answers to a write hold no secret)."""
    try:
        errors = answer.json().get("errors") or [""]
    except ValueError:
        return answer.text[:60]
    return str(errors[0])[:60]


class Probe:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.token = Path(args.token_file).read_text().strip()
        context = ssl.create_default_context(cafile=args.ca)
        self.http = httpx.Client(verify=context, timeout=args.timeout, trust_env=False)
        self.stop = threading.Event()
        self.attempts: list[dict[str, Any]] = []
        self._next = 0
        self.run_id = secrets.token_hex(4)
        self.journal = Path(args.journal) if args.journal else None
        self.resumed = False
        if self.journal is not None and self.journal.exists():
            lines = self.journal.read_text().splitlines()
            # A line cut short by the crash is dropped: that attempt never got its answer.
            self.attempts = [json.loads(line) for line in lines if line.endswith("}")]
            if self.attempts:
                self.run_id = str(self.attempts[0]["run"])
                self.resumed = True

    def _record(self, attempt: dict[str, Any]) -> None:
        attempt["run"] = self.run_id
        self.attempts.append(attempt)
        if self.journal is not None:
            with self.journal.open("a") as out:
                out.write(json.dumps(attempt) + "\n")

    def _request(
        self, method: str, ip: str, path: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        return self.http.request(
            method,
            f"https://{ip}:{self.args.port}{path}",
            json=body,
            headers={"X-Vault-Token": self.token, "Host": self.args.tls_name},
            extensions={"sni_hostname": self.args.tls_name},
        )

    def ensure_mount(self) -> None:
        """The KV v2 mount, once (an existing one is fine); bounded."""
        deadline = time.monotonic() + 60
        while not self.stop.is_set() and time.monotonic() < deadline:
            for ip in _addresses(self.args.dns, self.args.port):
                try:
                    answer = self._request(
                        "POST",
                        ip,
                        f"/v1/sys/mounts/{self.args.mount}",
                        {"type": "kv", "options": {"version": "2"}},
                    )
                except httpx.HTTPError:
                    continue
                if answer.status_code in (200, 204) or "already in use" in answer.text:
                    return
            time.sleep(0.5)

    def write_once(self) -> None:
        ips = _addresses(self.args.dns, self.args.port)
        at = time.time()
        if not ips:
            self._record({"at": at, "ok": False, "error": "no address"})
            return
        first = self._next % len(ips)
        self._next += 1
        n = len(self.attempts)
        ok, error = self._write(ips[first], n)
        record: dict[str, Any] = {"at": at, "ok": ok, "error": error, "n": n}
        if not ok and self.args.retry_elsewhere:
            # What a client that follows the cluster does (a redirect, a load balancer's retry):
            # the same write to the next member, each once, at once.
            others = ips[first + 1 :] + ips[:first]
            record["retried_ok"] = any(self._write(ip, n)[0] for ip in others)
        self._record(record)

    def _write(self, ip: str, n: int) -> tuple[bool, str]:
        try:
            answer = self._request(
                "POST", ip, self._path(n), {"data": {"n": str(n), "run": self.run_id}}
            )
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__} to {ip}"
        if answer.status_code == 200:
            return True, ""
        return False, f"HTTP {answer.status_code} from {ip}: {_first_error(answer)}"

    def _path(self, n: int) -> str:
        return f"/v1/{self.args.mount}/data/certflow/kv-probe/{self.run_id}/{n}"

    def _read(self, n: int) -> bool | None:
        """Whether write ``n`` is there: True, False (a member said 404), None (no answer)."""
        for ip in _addresses(self.args.dns, self.args.port):
            try:
                answer = self._request("GET", ip, self._path(n))
            except httpx.HTTPError:
                continue
            if answer.status_code == 200:
                return bool(answer.json()["data"]["data"].get("n") == str(n))
            if answer.status_code == 404:
                return False
        return None

    def read_back(self, deadline: float) -> tuple[list[int], int]:
        """Acknowledged writes that are gone, and how many could not be read before ``deadline``.

        A 404 is asked again a few times first: a member that has just rejoined may serve a
        stale read for a few seconds (../shared/reference/openbao-raft-facts.md).
        """
        pending = [a["n"] for a in self.attempts if a["ok"] or a.get("retried_ok")]
        lost: list[int] = []
        tries: dict[int, int] = {}
        while pending and time.monotonic() < deadline:
            n = pending.pop(0)
            found = self._read(n)
            if found is True:
                continue
            tries[n] = tries.get(n, 0) + 1
            if found is False and tries[n] >= 5:
                lost.append(n)
                continue
            pending.append(n)
            time.sleep(0.2)
        return lost, len(pending)

    def run(self) -> dict[str, Any]:
        if not self.resumed:
            self.ensure_mount()
        # Writes may fail for a moment after the mount (KV v2 upgrades itself): start once one
        # succeeds, bounded, so that the report measures the rotation, not the mount.
        deadline = time.monotonic() + 30
        while not self.resumed and not self.stop.is_set() and time.monotonic() < deadline:
            self.write_once()
            if self.attempts[-1]["ok"]:
                break
            time.sleep(self.args.interval)
        if not self.resumed:
            self.attempts.clear()
            if self.journal is not None:
                self.journal.write_text("")
        print("kv-probe: writing", flush=True)
        end = time.monotonic() + self.args.max_duration
        while not self.stop.is_set() and time.monotonic() < end:
            self.write_once()
            self.stop.wait(self.args.interval)
        result = report(self.attempts, self.args.interval)
        lost, unread = self.read_back(time.monotonic() + self.args.read_back)
        result.update(acknowledged=len(self.attempts) - result["failed"], lost=lost, unread=unread)
        return result


def report(attempts: list[dict[str, Any]], interval: float) -> dict[str, Any]:
    # A failing start or end counts as a gap too: bound the successes by the first and last try.
    good = [a["at"] for a in attempts if a["ok"]]
    if attempts:
        good = [attempts[0]["at"], *good, attempts[-1]["at"]]
    gaps = [b - a for a, b in itertools.pairwise(good)]
    errors: dict[str, int] = {}
    for attempt in attempts:
        if not attempt["ok"]:
            errors[attempt["error"]] = errors.get(attempt["error"], 0) + 1
    served = [a["at"] for a in attempts if a["ok"] or a.get("retried_ok")]
    if attempts:
        served = [attempts[0]["at"], *served, attempts[-1]["at"]]
    retrying = any("retried_ok" in a for a in attempts)
    return {
        "attempts": len(attempts),
        "failed": sum(1 for a in attempts if not a["ok"]),
        # With --retry-elsewhere: writes no member took (the client's failures), and the longest
        # gap between writes some member took.
        **(
            {
                "unserved": sum(1 for a in attempts if not a["ok"] and not a.get("retried_ok")),
                "longest_served_gap_s": round(
                    max((b - a for a, b in itertools.pairwise(served)), default=0.0), 3
                ),
            }
            if retrying
            else {}
        ),
        "longest_gap_s": round(max(gaps, default=0.0), 3),
        "interval_s": interval,
        "errors": errors,
        "failed_at": [a["at"] for a in attempts if not a["ok"]],
        "last_at": attempts[-1]["at"] if attempts else 0.0,  # the probe saw the row until then
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kv_probe", description=__doc__)
    parser.add_argument("--dns", required=True, help="name whose addresses are the members")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--tls-name", default="vault.iklim.co")
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--mount", default="secret")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--max-duration", type=float, default=900.0)
    parser.add_argument(
        "--read-back", type=float, default=60.0, help="seconds to read back acknowledged writes"
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--journal", default="", help="append every attempt here; resume from it")
    parser.add_argument(
        "--retry-elsewhere",
        action="store_true",
        help="a failed write is tried once on every other member at once (and reported apart)",
    )
    args = parser.parse_args(argv)
    probe = Probe(args)
    signal.signal(signal.SIGTERM, lambda *_: probe.stop.set())
    result = probe.run()
    text = json.dumps(result)
    Path(args.out).write_text(text)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
