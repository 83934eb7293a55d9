"""Run by test_restart_once in a subprocess: a restart-mode distributor looping until killed.

argv: source_dir target_dir vault_service peer_health_url
"""

from __future__ import annotations

import sys
import threading

from services.distributor.docker_ops import open_client
from services.distributor.peers import PeerDirectory
from services.distributor.service import Distributor
from services.distributor.settings import DistributorSettings
from shared.settings import load_settings
from shared.swarm import local_node


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
    client = open_client()
    node = local_node(client).node_id
    peers = PeerDirectory(docker_client=None, service="unused", port=1, static={node: peer})
    return Distributor(settings, docker_client=client, peers=peers).run(threading.Event())


if __name__ == "__main__":
    sys.exit(main())
