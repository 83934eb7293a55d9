"""Sample every Vault replica's seal status continuously, from a container on the Vault network.

``SealSampler`` runs the ``_PROBE`` loop in a one-off container of the project image (the overlay
network is not reachable from the host), on the host's engine or, with ``docker``, on a lab
node's. Each round it resolves ``tasks.<alias>``, reads every address's served leaf and
``/v1/sys/health`` (sealed, standby), on an unsealed member also ``/v1/sys/leader`` (its
``raft_applied_index`` and ``raft_committed_index`` as ``applied``/``committed``), and prints one
JSON line per round (every ``every`` seconds). ``seconds_without_unsealed()``,
``seconds_without_active()`` and ``converged_at()`` read those rounds afterwards (the module's
``stretches_without_active()`` and ``round_spacing()`` read kept rounds, without a sampler);
``tests.support.timeline`` turns them into a per-member timeline.
"""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tests.support.e2e_names import unique

_PROBE = r"""
import hashlib, http.client, json, socket, ssl, sys, time
alias, port, every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE  # a probe of seal state and served leaf; trust is verify's job
while True:
    started = time.time()
    try:
        ips = sorted({a[4][0] for a in socket.getaddrinfo("tasks." + alias, port)})
    except OSError:
        ips = []
    states = {}
    for ip in ips:
        conn = http.client.HTTPSConnection(ip, port, context=ctx, timeout=0.5)
        try:
            conn.connect()
            cert = hashlib.sha256(conn.sock.getpeercert(True)).hexdigest()
            conn.request("GET", "/v1/sys/health")
            body = json.loads(conn.getresponse().read())
            sealed = body["sealed"]
            active = not sealed and body.get("standby") is False
            states[ip] = {"sealed": sealed, "active": active, "cert": cert}
            if not sealed:
                try:  # raft progress, no token needed: has a restarted member caught up?
                    conn.request("GET", "/v1/sys/leader")
                    leader = json.loads(conn.getresponse().read())
                    states[ip]["applied"] = leader.get("raft_applied_index")
                    states[ip]["committed"] = leader.get("raft_committed_index")
                except Exception:
                    pass
        except Exception as exc:
            states[ip] = {"error": type(exc).__name__}
        finally:
            conn.close()
    unsealed = sum(1 for s in states.values() if s.get("sealed") is False)
    active = sum(1 for s in states.values() if s.get("active"))
    print(json.dumps({"t": started, "unsealed": unsealed, "active": active, "states": states}),
          flush=True)
    time.sleep(max(0.0, every - (time.time() - started)))
"""


@dataclass
class Sample:
    t: float
    unsealed: int
    states: dict[str, dict[str, object]]
    active: int = 0


# A hole this long between two rounds means the sampler was not running (a round takes at most
# ~0.5 s per member that does not answer).
UNOBSERVED_AFTER = 10.0


def _host_docker(*argv: str, check: bool = True) -> str:
    done = subprocess.run(
        ["docker", *argv], capture_output=True, text=True, timeout=120, check=check
    )
    return done.stdout


class SealSampler:
    """``docker``: runs a docker command on the engine the sampler lives on (default: the host's)
    and returns its stdout; ``check=False`` must not raise."""

    def __init__(
        self,
        *,
        image: str,
        network: str,
        alias: str = "vault",
        port: int = 8200,
        every: float = 0.2,
        docker: Callable[..., str] = _host_docker,
    ):
        self.image = image
        self.network = network
        self.alias = alias
        self.port = port
        self.every = every
        self.docker = docker
        self.name = unique("certflow-sealsampler-")
        self.samples: list[Sample] = []

    def start(self) -> SealSampler:
        self.docker(
            "run", "-d", "--name", self.name, "--network", self.network,
            # Back after a restart of its Docker daemon; the hole in between counts as unobserved.
            "--restart", "unless-stopped",
            "--entrypoint", "python3", self.image, "-c", _PROBE,
            self.alias, str(self.port), str(self.every),
        )  # fmt: skip
        return self

    def stop(self) -> list[Sample]:
        logs = self.docker("logs", self.name, check=False)
        self.docker("rm", "-f", self.name, check=False)
        self.samples = []
        for line in logs.splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            sample = Sample(
                doc["t"], int(doc["unsealed"]), dict(doc["states"]), int(doc.get("active", 0))
            )
            if self.samples and sample.t - self.samples[-1].t > UNOBSERVED_AFTER:
                # The sampler itself was down (its daemon restarted): assume the worst of the hole.
                self.samples.append(Sample(self.samples[-1].t + self.every, 0, {}, 0))
            self.samples.append(sample)
        return self.samples

    def seconds_without_unsealed(self, since: float | None = None) -> float:
        """Total time covered by rounds in which no replica answered unsealed."""
        rounds = [s for s in self.samples if since is None or s.t >= since]
        total = 0.0
        for current, following in itertools.pairwise(rounds):
            if current.unsealed == 0:
                total += following.t - current.t
        return total

    def seconds_without_active(self, since: float | None = None) -> float:
        """Total time covered by rounds in which no member answered as the active one."""
        return sum(stretches_without_active(self.samples, since))

    def most_not_unsealed(self, replicas: int, since: float | None = None) -> int:
        """The most members at once that did not answer unsealed (stopped, sealed, unreachable)."""
        rounds = [s for s in self.samples if since is None or s.t >= since]
        return max((replicas - s.unsealed for s in rounds), default=0)

    def longest_without_active(self, since: float | None = None) -> float:
        """The longest stretch of consecutive rounds in which no member answered active."""
        return max(stretches_without_active(self.samples, since), default=0.0)

    def serving(self, sample: Sample, cert_sha256: str) -> int:
        """Replicas in ``sample`` that are unsealed and serve the leaf with this DER digest."""
        return sum(
            1
            for state in sample.states.values()
            if state.get("sealed") is False and state.get("cert") == cert_sha256
        )

    def converged_at(self, after: float, cert_sha256: str, replicas: int) -> float | None:
        """First time after ``after`` from which every replica stays unsealed on that leaf."""
        found: float | None = None
        for sample in self.samples:
            if sample.t < after:
                continue
            if self.serving(sample, cert_sha256) >= replicas:
                found = sample.t if found is None else found
            else:
                found = None
        return found


# -- pure readings of the rounds (also for rounds kept after the sampler is gone) ---------------


def stretches_without_active(samples: Sequence[Sample], since: float | None = None) -> list[float]:
    """The length of each stretch of consecutive rounds in which no member answered active: from
    its first such round to the next round (a round stands for the time until the next one)."""
    rounds = [s for s in samples if since is None or s.t >= since]
    found: list[float] = []
    began: float | None = None
    for current, following in itertools.pairwise(rounds):
        if current.active != 0:
            began = None
            continue
        if began is None:
            began = current.t
            found.append(0.0)
        found[-1] = following.t - began
    return found


def round_spacing(samples: Sequence[Sample]) -> tuple[float, float] | None:
    """(median, longest) seconds between consecutive rounds: the sampler's real resolution (a
    round waits up to 0.5 s on each member that does not answer). None: fewer than two rounds."""
    gaps = sorted(b.t - a.t for a, b in itertools.pairwise(samples))
    if not gaps:
        return None
    return statistics.median(gaps), gaps[-1]
