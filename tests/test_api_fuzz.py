"""Schemathesis over the whole API of a running platform, with valid admin credentials: no server error.

Schemathesis generates requests from our OpenAPI document (positive and negative data); each
operation gets its own Hypothesis run against `edgeloop up` with authentication on.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation import GenerationMode

from tests.conftest import LivePlatform, start_up_process, stop_up_process

SKIPPED = {("POST", "/api/v1/auth/logout")}  # it would end the session every other request uses


@pytest.fixture(scope="module")
def authed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LivePlatform, dict[str, str]]]:
    live = start_up_process(tmp_path_factory.mktemp("fuzz") / "data", devices=2, faulty=1, auth=True)
    try:
        form = urllib.parse.urlencode({"username": live.admin_user, "password": live.admin_password}).encode()
        with urllib.request.urlopen(live.base_url + "/api/v1/auth/token", data=form, timeout=10) as resp:
            token = json.load(resp)["access_token"]
        yield live, {"Authorization": f"Bearer {token}"}
    finally:
        stop_up_process(live)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_error_anywhere(authed: tuple[LivePlatform, dict[str, str]], mode: GenerationMode) -> None:
    live, headers = authed
    schema = schemathesis.openapi.from_url(live.base_url + "/openapi.json", headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25, "the whole API is in the schema"
    failures: list[str] = []
    for op in operations:
        if (op.method.upper(), op.path) in SKIPPED:
            continue

        @given(case=op.as_strategy(generation_mode=mode))
        @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def call(case: Any) -> None:
            response = case.call(base_url=live.base_url, headers=headers)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                f"{response.text[:200]}")

        try:
            call()
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE, f"{op.method} {op.path}: no valid request can be generated"
            # nothing to negate in this operation (no parameters or body)
    assert not failures, "\n".join(failures[:20])
    assert live.get("/api/v1/health")["status"] == "ok", "the platform survived"
