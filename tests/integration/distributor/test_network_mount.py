"""On a share that delivers no inotify events (sshfs), polling alone installs each renewal."""

from __future__ import annotations

import threading
from pathlib import Path

from services.distributor.service import Distributor
from services.distributor.settings import DistributorSettings
from shared.settings import load_settings
from shared.watch import ChangeWatcher, Wake
from tests.support.boxes import CERT, KEY, make_pair, publish
from tests.support.pki import CA

from .conftest import wait_for
from .sshfs_box import sshfs_box


def test_polling_follows_a_storage_box_on_sshfs(tmp_path: Path) -> None:
    ca = CA()
    with sshfs_box(tmp_path) as box:
        publish(box.backing, make_pair(ca, 1))
        settings = load_settings(
            DistributorSettings,
            {
                "DISTRIBUTOR_SOURCE_DIR": str(box.mount),
                "DISTRIBUTOR_TARGET_DIR": str(tmp_path / "target"),
                "DISTRIBUTOR_RELOAD_MODE": "none",
                "DISTRIBUTOR_POLL_INTERVAL": "0.5",
            },
        )
        dist = Distributor(settings)
        stop = threading.Event()
        worker = threading.Thread(target=dist.run, args=(stop,))
        worker.start()
        try:

            def generation() -> int | None:
                installed = dist.installer.installed()
                return installed.manifest.generation if installed else None

            wait_for("generation 1 from the share", lambda: generation() == 1, 30)
            # Another client writes the renewal straight to the server side: no event here.
            probe = ChangeWatcher(box.mount, recursive=False)
            assert probe.ensure_started()
            second = make_pair(ca, 2)
            publish(box.backing, second)
            wait_for("generation 2 from the share", lambda: generation() == 2, 30)
            delivered = probe.wait(threading.Event(), 0)
            probe.stop()
            assert delivered is Wake.TIMER, "the share delivered an inotify event after all"
            assert (tmp_path / "target" / CERT).read_bytes() == second.cert
            assert (tmp_path / "target" / KEY).read_bytes() == second.key
        finally:
            stop.set()
            worker.join(10)
