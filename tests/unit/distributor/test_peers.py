"""Fan-out to peer distributors' /health over an injected transport (the real httpx client)."""

from __future__ import annotations

import json

import httpx

from services.distributor.facts import DistributorInfo
from services.distributor.peers import (
    PeerDirectory,
    PeerFailure,
    fan_out,
    health_url,
    reports_by_node,
)


def health_body(info: DistributorInfo, status: str = "ok") -> dict[str, object]:
    return {"service": "cert-distributor", "status": status, "info": info.model_dump(mode="json")}


def transport() -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host == "10.0.0.1":
            return httpx.Response(
                200, json=health_body(DistributorInfo(node_id="n1", fingerprint="F", generation=3))
            )
        if host == "10.0.0.2":
            # A failing peer answers 503; its report is still what the coordinator needs.
            info = DistributorInfo(node_id="n2", fingerprint="OLD", last_error="EIO")
            return httpx.Response(503, json=health_body(info, "failing"))
        if host == "10.0.0.3":
            return httpx.Response(200, content=b"<html>proxy</html>")
        raise httpx.ConnectError("connection refused", request=request)

    return httpx.MockTransport(handler)


def test_fan_out_parses_reports_and_reasons() -> None:
    urls = [health_url(f"10.0.0.{i}", 8080) for i in (1, 2, 3, 4)]
    answers = fan_out(urls, transport=transport())
    assert isinstance(answers[0], DistributorInfo)
    assert answers[0].generation == 3
    assert isinstance(answers[1], DistributorInfo)
    assert answers[1].last_error == "EIO"
    assert isinstance(answers[2], PeerFailure)
    assert "unusable" in answers[2].reason
    assert isinstance(answers[3], PeerFailure)
    assert "ConnectError" in answers[3].reason
    reports, failures = reports_by_node(answers)
    assert set(reports) == {"n1", "n2"}
    assert len(failures) == 2


def test_directory_keys_reports_by_the_task_node() -> None:
    directory = PeerDirectory(
        engine=None,
        service="svc",
        port=8080,
        transport=transport(),
        static={"n1": health_url("10.0.0.1", 8080), "n9": health_url("10.0.0.4", 8080)},
    )
    survey = directory.survey()
    assert set(survey.reports) == {"n1"}
    assert set(survey.failures) == {"n9"}


def test_info_model_round_trips_through_json() -> None:
    info = DistributorInfo(node_id="n", hostname="h", fingerprint="F", generation=1)
    assert DistributorInfo.model_validate(json.loads(info.model_dump_json())) == info


def test_ipv6_url() -> None:
    assert health_url("fd00::1", 9) == "http://[fd00::1]:9/health"
