"""Planning the one-off container of ``certflow status``/``verify`` from the distributor's spec."""

from __future__ import annotations

from typing import Any

import pytest

from services.verify.launch import (
    LAUNCHED_ENV,
    LaunchError,
    child_argv,
    plan,
    should_launch,
)
from services.verify.settings import VerifySettings
from shared.settings import load_settings
from shared.swarm import BindMount, LocalNode, ServiceState, manager_problem


def _spec(env: list[str] | None = None, mounts: list[dict[str, Any]] | None = None) -> ServiceState:
    """The cert-distributor's spec as `docker stack deploy` writes it (the certs stack)."""
    return ServiceState(
        service_id="s1",
        name="iklimco_cert-distributor",
        version=3,
        labels={},
        force_update=0,
        update_state=None,
        update_message="",
        mode="global",
        spec={
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "certflow:1.2",
                    "Env": env
                    if env is not None
                    else [
                        "DISTRIBUTOR_SOURCE_DIR=/mnt/storagebox/ssl",
                        "DISTRIBUTOR_TARGET_DIR=/opt/iklimco/ssl",
                        "DISTRIBUTOR_TRUST_BUNDLE=/certflow-ca/roots.pem",
                        "DISTRIBUTOR_TRUST_NAME=vault.example.org",
                        "CERTFLOW_CERT_NAME=STAR.example.org.full.crt",
                        "CERTFLOW_KEY_NAME=STAR.example.org_key.pem",
                    ],
                    "Mounts": mounts
                    if mounts is not None
                    else [
                        {"Type": "bind", "Source": "/srv/box/ssl", "Target": "/mnt/storagebox/ssl",
                         "ReadOnly": True},
                        {"Type": "bind", "Source": "/srv/ssl", "Target": "/opt/iklimco/ssl"},
                        {"Type": "bind", "Source": "/run/docker.sock",
                         "Target": "/var/run/docker.sock"},
                        {"Type": "bind", "Source": "/etc/ca", "Target": "/certflow-ca",
                         "ReadOnly": True},
                    ],
                }
            }
        },
    )  # fmt: skip


SETTINGS = load_settings(VerifySettings, {"VERIFY_STACK": "prod"})


def test_the_plan_uses_the_distributors_image_mounts_and_paths() -> None:
    oneoff = plan(_spec(), SETTINGS, ["status", "--json"], {"VERIFY_TIMEOUT": "9"})
    assert oneoff.image == "certflow:1.2"
    assert oneoff.argv == ("status", "--json")
    assert oneoff.network == "prod_vault"
    assert oneoff.user == "0:0"
    assert set(oneoff.mounts) == {
        BindMount("/srv/box/ssl", "/mnt/storagebox/ssl"),
        BindMount("/srv/ssl", "/opt/iklimco/ssl"),
        BindMount("/run/docker.sock", "/var/run/docker.sock"),
        BindMount("/etc/ca", "/certflow-ca"),
    }
    assert all(m.read_only for m in oneoff.mounts)  # the check never writes
    assert oneoff.env == {
        LAUNCHED_ENV: "1",
        "VERIFY_STACK": "prod",
        "VERIFY_STORAGEBOX_DIR": "/mnt/storagebox/ssl",
        "VERIFY_SSL_DIR": "/opt/iklimco/ssl",
        "VERIFY_VAULT_CA_FILE": "/certflow-ca/roots.pem",
        "VERIFY_VAULT_SERVER_NAME": "vault.example.org",
        "VERIFY_CERT_NAME": "STAR.example.org.full.crt",
        "VERIFY_KEY_NAME": "STAR.example.org_key.pem",
        "VERIFY_TIMEOUT": "9",  # the operator's own settings go along
    }


def test_host_paths_of_the_operator_are_not_passed_but_names_are() -> None:
    environ = {
        "VERIFY_SSL_DIR": "/home/op/ssl",
        "VERIFY_VAULT_SERVER_NAME": "vault.other.org",
        "PATH": "/usr/bin",
    }
    oneoff = plan(_spec(), SETTINGS, ["verify"], environ)
    assert oneoff.env["VERIFY_SSL_DIR"] == "/opt/iklimco/ssl"
    assert oneoff.env["VERIFY_VAULT_SERVER_NAME"] == "vault.other.org"
    assert "PATH" not in oneoff.env


def test_a_file_mounted_under_a_directory_mount_uses_the_deepest_one() -> None:
    mounts = [
        {"Type": "bind", "Source": "/", "Target": "/host"},
        {"Type": "bind", "Source": "/srv/box", "Target": "/mnt/storagebox/ssl"},
        {"Type": "bind", "Source": "/srv/ssl", "Target": "/opt/iklimco/ssl"},
        {"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/var/run/docker.sock"},
    ]
    oneoff = plan(_spec(env=[], mounts=mounts), SETTINGS, ["verify"], {})
    assert {m.target for m in oneoff.mounts} == {
        "/mnt/storagebox/ssl",
        "/opt/iklimco/ssl",
        "/var/run/docker.sock",
    }
    assert "VERIFY_VAULT_CA_FILE" not in oneoff.env  # no bundle: the system's trust store


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ("/mnt/storagebox/ssl", "the Storage Box (/mnt/storagebox/ssl)"),
        ("/opt/iklimco/ssl", "the installed pair (/opt/iklimco/ssl)"),
        ("/var/run/docker.sock", "the Docker socket"),
        ("/certflow-ca", "the trust bundle (/certflow-ca/roots.pem)"),
    ],
)
def test_a_missing_mount_is_named(missing: str, named: str) -> None:
    mounts = [
        m
        for m in _spec().spec["TaskTemplate"]["ContainerSpec"]["Mounts"]  # type: ignore[index]
        if m["Target"] != missing
    ]
    with pytest.raises(LaunchError, match=named.replace("(", r"\(").replace(")", r"\)")):
        plan(_spec(mounts=mounts), SETTINGS, ["status"], {})


def test_a_spec_without_an_image_is_refused() -> None:
    spec = ServiceState("s", "x", 1, {}, 0, None, "", spec={"TaskTemplate": {}})
    with pytest.raises(LaunchError, match="no container image"):
        plan(spec, SETTINGS, ["status"], {})


@pytest.mark.parametrize(
    ("local", "problem"),
    [
        (LocalNode("abc", "active", True), None),
        (LocalNode("", "inactive", False), "not part of an active swarm (swarm state: inactive)"),
        (LocalNode("", "", False), "not part of an active swarm (swarm state: inactive)"),
        (LocalNode("abc", "locked", True), "swarm state: locked"),
        (LocalNode("abc", "active", False), "this node is a swarm worker"),
    ],
)
def test_manager_problem(local: LocalNode, problem: str | None) -> None:
    found = manager_problem(local)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


@pytest.mark.parametrize(
    ("here", "environ", "networks", "launch"),
    [
        (False, {}, None, True),  # on a host
        (False, {}, frozenset({"bridge"}), True),  # a container off the Vault network
        (False, {}, frozenset({"bridge", "prod_vault"}), False),  # already on it
        (True, {}, None, False),  # asked to run here
        (False, {LAUNCHED_ENV: "1"}, None, False),  # the one-off itself
    ],
)
def test_should_launch(
    here: bool, environ: dict[str, str], networks: frozenset[str] | None, launch: bool
) -> None:
    assert (
        should_launch(here=here, environ=environ, networks=networks, network="prod_vault") is launch
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["verify", "--json"], ("verify", "--json")),
        (["verify", "--ssl-dir", "/srv/ssl", "--json"], ("verify", "--json")),
        (["verify", "--ssl-dir=/srv/ssl"], ("verify",)),
        (["verify", "--vault-ca-file", "/etc/ca.pem", "--storagebox-dir=/b"], ("verify",)),
        (["status", "--stack", "prod"], ("status", "--stack", "prod")),
    ],
)
def test_host_path_flags_stay_on_the_host(argv: list[str], expected: tuple[str, ...]) -> None:
    assert child_argv(argv) == expected
    assert plan(_spec(), SETTINGS, argv, {}).argv == expected
