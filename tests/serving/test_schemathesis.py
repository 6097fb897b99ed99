"""Property-based requests from the API's own OpenAPI document: whatever they hold, never a 5xx.

Schemathesis generates requests that fit the schema (positive) and ones that break it (negative)
for every operation; the server runs the tiny bundle on a real socket. Bounded examples keep it short.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode

from edge_agent.contracts import GenerationDefaults
from tests.serving.conftest import MakeBundle, serving

EXAMPLES = {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 15}


@pytest.mark.parametrize("mode", list(EXAMPLES))
def test_no_server_errors(serving_bundle: MakeBundle, mode: GenerationMode) -> None:
    # a short window keeps every generated request cheap (max_tokens past it is a 400)
    bundle = serving_bundle("9.0.0", defaults=GenerationDefaults(max_length=48))
    with serving(bundle, max_concurrent=1, max_queue=64) as running:
        schema = schemathesis.openapi.from_url(f"{running.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/completions", "/v1/models"}
        calls: dict[str, int] = {}
        for operation in operations:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES[mode],
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case) -> None:  # type: ignore[no-untyped-def]
                calls[case.operation.path] = calls.get(case.operation.path, 0) + 1
                case.call_and_validate(checks=[not_a_server_error])

            try:
                check()
            except Unsatisfiable:  # no input to break (GET /healthz): nothing negative to send
                assert mode is GenerationMode.NEGATIVE
        assert calls["/v1/chat/completions"] >= 5 and calls["/v1/completions"] >= 5, calls
