"""Property: no request generated from the OpenAPI document gets a 5xx, and every 4xx is problem+json.

Schemathesis turns every operation of the served OpenAPI document into a Hypothesis strategy
(valid and deliberately invalid bodies, parameters and headers); each generated request goes
to the real stack (HTTP runtime + PostgreSQL) with a valid bearer token.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.e2e

# Deterministic by default so CI is reproducible; CHAT4ALL_FUZZ_RANDOM=1 explores afresh each run
# and CHAT4ALL_FUZZ_EXAMPLES raises the count for a longer hunt.
EXAMPLES_PER_OPERATION = int(os.environ.get("CHAT4ALL_FUZZ_EXAMPLES", "60"))
DERANDOMIZE = not os.environ.get("CHAT4ALL_FUZZ_RANDOM")


@pytest.fixture(scope="module")
def auth(stack: Any) -> dict[str, str]:
    name = f"fuzz{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=stack.base_url, trust_env=False) as c:
        assert c.post("/v1/users", json={"username": name, "password": "fuzz-password"}).status_code == 201
        token = c.post("/auth/token", json={"username": name, "password": "fuzz-password"}).json()["access_token"]
        # Give the fuzzer something real to find: a conversation and a message.
        assert c.post("/v1/users", json={"username": name + "b", "password": "fuzz-password"}).status_code == 201
        h = {"Authorization": f"Bearer {token}"}
        conv = c.post("/v1/conversations", json={"type": "private", "members": [name + "b"]}, headers=h).json()
        sent = c.post(
            "/v1/messages",
            headers=h,
            json={"conversation_id": conv["conversation_id"], "payload": {"type": "text", "text": "seed"}},
        )
        assert sent.status_code == 202
    return h


def _operations(base_url: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{base_url}/schema/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def test_generated_requests_never_get_a_server_error(stack: Any, auth: dict[str, str]) -> None:
    operations = _operations(stack.base_url)
    assert len(operations) >= 15
    seen: dict[str, set[int]] = {}
    failures: list[str] = []

    def probe_for(operation: Any, statuses: set[int]) -> Any:
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            derandomize=DERANDOMIZE,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(), with_token=st.booleans())
        def probe(case: Any, with_token: bool) -> None:
            headers = dict(auth) if with_token else {}
            response = case.call(base_url=stack.base_url, headers=headers, timeout=10)
            statuses.add(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{operation.label}: {response.status_code} for {case.as_curl_command()}")
            elif response.status_code >= 400:
                ctype = (response.headers.get("content-type") or [""])[0]
                if not ctype.startswith("application/problem+json"):
                    failures.append(f"{operation.label}: {response.status_code} as {ctype!r}")

        return probe

    for operation in operations:
        probe_for(operation, seen.setdefault(operation.label, set()))()

    assert not failures, "\n".join(failures[:20])
    # The run must have reached the handlers, not only the validators.
    assert any(s for s in seen.values() if any(200 <= code < 300 for code in s))
    assert any(s for s in seen.values() if any(400 <= code < 500 for code in s))
