"""What vault-bootstrap asks raft autopilot for (pure)."""

from __future__ import annotations

from services.unsealer.bootstrap_cluster import autopilot_settings


def test_three_members_get_dead_server_cleanup_with_a_quorum_floor() -> None:
    assert autopilot_settings(3, "10m") == {
        "cleanup_dead_servers": True,
        "dead_server_last_contact_threshold": "10m",
        "min_quorum": 3,
    }


def test_the_stabilization_time_is_set_only_when_asked() -> None:
    settings = autopilot_settings(3, "10m", "4s")
    assert settings is not None
    assert settings["server_stabilization_time"] == "4s"
    assert "server_stabilization_time" not in (autopilot_settings(5, "1m") or {})


def test_smaller_clusters_keep_the_servers_defaults() -> None:
    assert autopilot_settings(2, "10m", "4s") is None
