"""Sync: follow the committed Storage Box generation; wait on partial uploads; refuse bad pairs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.distributor.install import PairInstaller
from services.distributor.sync import Step, Syncer, plan
from shared.atomic import write_file_atomic
from shared.certs import required_names
from shared.errors import CertificateInvalid, Reason, StorageError
from shared.manifest import MANIFEST_NAME
from shared.storagebox import read_snapshot
from tests.support.boxes import CERT, KEY, make_pair, publish
from tests.support.pki import CA

NOW = datetime.now(UTC)


@pytest.fixture
def ca() -> CA:
    return CA()


def syncer(tmp_path: Path) -> Syncer:
    inst = PairInstaller(tmp_path / "target", cert_name=CERT, key_name=KEY)
    return Syncer(tmp_path / "box", inst, names=required_names("iklim.co"))


def test_installs_a_committed_generation_then_is_current(tmp_path: Path, ca: CA) -> None:
    pair = make_pair(ca, 1)
    publish(tmp_path / "box", pair)
    sync = syncer(tmp_path)
    first = sync.sync_once(NOW)
    assert first.step is Step.INSTALL
    assert first.newly_installed
    assert (tmp_path / "target" / CERT).read_bytes() == pair.cert
    second = sync.sync_once(NOW)
    assert second.step is Step.CURRENT
    assert not second.newly_installed
    assert second.seen_generation == 1


def test_files_not_matching_the_manifest_yet_wait_and_keep_the_installed_pair(
    tmp_path: Path, ca: CA
) -> None:
    old, new = make_pair(ca, 1), make_pair(ca, 2)
    publish(tmp_path / "box", old)
    sync = syncer(tmp_path)
    sync.sync_once(NOW)
    # The new manifest arrived but the key upload has not (another client's partial upload).
    write_file_atomic(tmp_path / "box" / CERT, new.cert)
    write_file_atomic(tmp_path / "box" / MANIFEST_NAME, new.manifest.to_json())
    result = sync.sync_once(NOW)
    assert result.step is Step.WAIT
    assert KEY in result.detail
    assert (tmp_path / "target" / KEY).read_bytes() == old.key
    # Upload completes: installed on the next pass.
    write_file_atomic(tmp_path / "box" / KEY, new.key)
    assert sync.sync_once(NOW).step is Step.INSTALL
    assert (tmp_path / "target" / KEY).read_bytes() == new.key


def test_truncated_upload_waits(tmp_path: Path, ca: CA) -> None:
    pair = make_pair(ca, 1)
    publish(tmp_path / "box", pair)
    (tmp_path / "box" / CERT).write_bytes(pair.cert[: len(pair.cert) // 2])
    assert syncer(tmp_path).sync_once(NOW).step is Step.WAIT
    assert not (tmp_path / "target" / CERT).exists()


def test_empty_storage_box_waits(tmp_path: Path) -> None:
    (tmp_path / "box").mkdir()
    result = syncer(tmp_path).sync_once(NOW)
    assert result.step is Step.WAIT
    assert result.installed is None


def test_corrupt_manifest_waits(tmp_path: Path, ca: CA) -> None:
    publish(tmp_path / "box", make_pair(ca, 1))
    (tmp_path / "box" / MANIFEST_NAME).write_bytes(b"{not json")
    assert syncer(tmp_path).sync_once(NOW).step is Step.WAIT


def test_missing_mount_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not a directory"):
        syncer(tmp_path).sync_once(NOW)


@pytest.mark.parametrize("what", ["expired", "foreign_key", "wrong_domain"])
def test_invalid_committed_pair_is_refused_and_the_last_good_stays(
    tmp_path: Path, ca: CA, what: str
) -> None:
    good = make_pair(ca, 1)
    publish(tmp_path / "box", good)
    sync = syncer(tmp_path)
    sync.sync_once(NOW)
    if what == "expired":
        leaf = ca.leaf(not_before=NOW - timedelta(days=100), days=10)
        bad = make_pair(ca, 2, leaf)
        reason = Reason.EXPIRED
    elif what == "wrong_domain":
        bad = make_pair(ca, 2, ca.leaf(("example.org",)))
        reason = Reason.DOMAIN_MISMATCH
    else:
        leaf, other = ca.leaf(), ca.leaf()
        bad = make_pair(ca, 2, leaf)
        # A manifest that commits a key which does not belong to the certificate.
        from dataclasses import replace

        from shared.manifest import FileEntry

        bad = replace(
            bad,
            key=other.key_pem,
            manifest=replace(bad.manifest, key=FileEntry.of(KEY, other.key_pem)),
        )
        reason = Reason.KEY_MISMATCH
    publish(tmp_path / "box", bad)
    with pytest.raises(CertificateInvalid) as info:
        sync.sync_once(NOW)
    assert info.value.reason is reason
    assert "PRIVATE KEY" not in str(info.value)
    assert (tmp_path / "target" / CERT).read_bytes() == good.cert
    assert (tmp_path / "target" / KEY).read_bytes() == good.key


def test_manifest_naming_another_leaf_is_refused(tmp_path: Path, ca: CA) -> None:
    from dataclasses import replace

    pair = make_pair(ca, 1)
    other = make_pair(ca, 1)
    lying = replace(pair, manifest=replace(pair.manifest, leaf=other.manifest.leaf))
    publish(tmp_path / "box", lying)
    with pytest.raises(CertificateInvalid) as info:
        syncer(tmp_path).sync_once(NOW)
    assert info.value.reason is Reason.DIGEST_MISMATCH


def test_plan_is_install_when_the_generation_differs_even_with_same_files(
    tmp_path: Path, ca: CA
) -> None:
    pair = make_pair(ca, 1)
    publish(tmp_path / "box", pair)
    sync = syncer(tmp_path)
    sync.sync_once(NOW)
    snapshot = read_snapshot(tmp_path / "box", cert_name=CERT, key_name=KEY)
    assert plan(snapshot, sync.installer.installed()).step is Step.CURRENT
    assert plan(snapshot, None).step is Step.INSTALL
