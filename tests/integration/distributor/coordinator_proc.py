"""Run by test_restart_once in a subprocess: a restart-mode distributor looping until killed.

argv: source_dir target_dir vault_service peer_health_url
"""

from __future__ import annotations

import sys
import threading

from services.distributor.peers import PeerDirectory
from services.distributor.service import Distributor
from services.distributor.settings import DistributorSettings
from shared.docker_engine import open_engine
from shared.settings import load_settings


def main() -> int:
    source, target, vault, peer = sys.argv[1:5]
    settings = load_settings(
        DistributorSettings,
        {
            "DISTRIBUTOR_SOURCE_DIR": source,
            "DISTRIBUTOR_TARGET_DIR": target,
            "DISTRIBUTOR_VAULT_SERVICE": vault,
            "DISTRIBUTOR_POLL_INTERVAL": "0.2",
        },
    )
    engine = open_engine()
    node = engine.local_node().node_id
    peers = PeerDirectory(engine=None, service="unused", port=1, static={node: peer})
    return Distributor(settings, engine=engine, peers=peers).run(threading.Event())


if __name__ == "__main__":
    sys.exit(main())
