"""The demo's ACME CA (scripts/up, scripts/renew, scripts/down) with the real pebble and certbot:
a detached pebble outlives its starter and is found again, and a renewal against a NEW pebble
(after a reboot) lands in the same lineage."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.acme import Certbot, Pebble, SwagVolume, stop_detached
from tests.support.e2e_flow import append_pebble_root


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "pebble"
    stop_detached(tmp_path / "pebble")  # never leave a pebble behind, whatever failed


def _issuer(path: Path) -> x509.Name:
    return x509.load_pem_x509_certificates(path.read_bytes())[0].issuer


def test_a_detached_pebble_is_found_again_and_stopped_by_its_pid_file(workdir: Path) -> None:
    started = Pebble(workdir).start(detached=True)
    pid = started.pid
    assert pid is not None
    assert (workdir / "pebble.pid").read_text().strip() == str(pid)
    # Another process (scripts/renew) finds the same pebble, on the same port.
    found = Pebble.running(workdir)
    assert found is not None
    assert (found.pid, found.port) == (pid, started.port)
    assert os.getsid(pid) == pid, "pebble runs in its own session, so it outlives scripts/up"
    assert stop_detached(workdir)
    assert not (workdir / "pebble.pid").exists()
    assert Pebble.running(workdir) is None
    assert not stop_detached(workdir), "a second stop finds nothing to stop"


def test_a_pid_file_naming_another_process_is_not_trusted(workdir: Path) -> None:
    Pebble(workdir)  # writes pebble.json
    other = subprocess.Popen(["sleep", "60"])
    try:
        (workdir / "pebble.pid").write_text(f"{other.pid}\n")
        assert Pebble.running(workdir) is None
        assert not stop_detached(workdir)
        assert other.poll() is None, "a process that is not this pebble is never signalled"
    finally:
        other.kill()
        other.wait()


def test_renewals_keep_the_lineage_across_a_new_pebble(tmp_path: Path, workdir: Path) -> None:
    swag = SwagVolume(tmp_path / "swag")
    roots = tmp_path / "ca" / "roots.pem"
    first = Pebble(workdir).start(detached=True)
    append_pebble_root(first, roots)
    certbot = Certbot(first, swag)
    certbot.issue()
    assert certbot.lineage_server() == first.directory
    # Same pebble, found again by another process: a plain renewal.
    again = Pebble.running(workdir)
    assert again is not None
    Certbot(again, swag).renew()
    assert swag.generation() == 2
    issuer = _issuer(swag.live / "fullchain.pem")

    # A reboot: that pebble is gone; a new one has a new root and knows no account.
    first.stop()
    second = Pebble(workdir).start(detached=True)
    append_pebble_root(second, roots)
    renewing = Certbot(second, swag)
    assert renewing.lineage_server() != second.directory
    renewing.issue(force=True)
    assert swag.generation() == 3, "the new CA's certificate is the next generation"
    assert (swag.live / "fullchain.pem").is_symlink()
    assert _issuer(swag.live / "fullchain.pem") != issuer
    assert renewing.lineage_server() == second.directory
    renewing.renew()  # and the new account serves the next plain renewal
    assert swag.generation() == 4
    assert roots.read_text().count("BEGIN CERTIFICATE") == 2
