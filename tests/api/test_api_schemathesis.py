"""Schemathesis over the OpenAPI document: generated requests against the real server.

Every operation gets about the same share of ``CONVEYOR_SCHEMATHESIS_REQUESTS`` generated
requests (2,000 by default, more in a longer run): three quarters valid by the document,
one quarter invalid on purpose (negative mode). Each response must not be a 5xx and must
conform to the document (status code, content type, body schema). The event stream is left
out: it answers with a stream that does not end, which a generated request cannot read.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, assume, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api_helpers import ThreadedUvicorn, auth, start_api

# Against a cluster (make test-cluster) a tenth: the HTTP layer is the same, and each
# request costs several times more through redis-py's cluster client.
_ON_CLUSTER = os.environ.get("CONVEYOR_TEST_TOPOLOGY") == "cluster"
TOTAL = int(os.environ.get("CONVEYOR_SCHEMATHESIS_REQUESTS", "200" if _ON_CLUSTER else "2000"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
SKIPPED = {"/v1/queues/{queue}/events"}
FRAMING = {"content-length", "transfer-encoding"}


@pytest.fixture(scope="module")
def api(server_url: str) -> Iterator[ThreadedUvicorn]:
    # Short long polls: a generated wait must not hold the run for a minute.
    server = start_api(server_url, max_wait=0.05, prefix="fuzz")
    yield server
    server.stop()


@pytest.mark.timeout(300)
def test_generated_requests_conform(api: ThreadedUvicorn) -> None:
    schema = schemathesis.openapi.from_url(f"{api.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations() if result.ok().path not in SKIPPED]
    assert len(operations) >= 20
    sent: dict[str, int] = {}
    session = requests.Session()
    headers = auth("admin")

    def fuzz(operation: schemathesis.APIOperation, examples: int, round_: int, mode: GenerationMode) -> int:
        """Run up to ``examples`` generated requests; returns how many were sent (an
        operation with few possible inputs runs out before its share)."""
        before = sum(sent.values())

        @seed(round_)
        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def run(case: schemathesis.Case) -> None:
            # A generated Content-Length or Transfer-Encoding ("content-length: O") frames the
            # request wrongly: uvicorn's HTTP parser answers 400 in plain text before the
            # application sees it. That tests the server's parser, not this API.
            assume(not any(name.lower() in FRAMING for name in (case.headers or {})))
            label = f"{case.operation.method.upper()} {case.operation.path}"
            sent[label] = sent.get(label, 0) + 1
            case.call_and_validate(
                base_url=api.base_url, session=session, headers=headers, checks=CHECKS, timeout=30
            )

        with contextlib.suppress(Unsatisfiable):  # negative mode: nothing here can be made invalid
            run()
        return sum(sent.values()) - before

    per_mode: dict[str, int] = {}
    # Operations that used their whole share get the budget the others could not use.
    for mode, budget in ((GenerationMode.POSITIVE, TOTAL * 3 // 4), (GenerationMode.NEGATIVE, TOTAL)):
        pending = operations
        for round_ in range(4):
            left = budget - sum(sent.values())
            if left <= 0 or not pending:
                break
            share = -(-left // len(pending))
            pending = [op for op in pending if fuzz(op, share, round_, mode) >= share]
        per_mode[mode.value] = sum(sent.values()) - sum(per_mode.values())
    session.close()
    total = sum(sent.values())
    print(f"schemathesis: {total} requests over {len(sent)} operations, {per_mode}")
    assert total >= TOTAL * 0.9, sent
    assert per_mode["negative"] >= TOTAL // 10, per_mode
