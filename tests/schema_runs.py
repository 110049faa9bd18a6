"""Schemathesis over a served OpenAPI document: every operation, valid and invalid
requests, each sent with several tokens, every answer checked against the document."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS: list[Any] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def every_operation(
    schema: Any,
    tokens: Sequence[str],
    examples: int,
    checks_for: Callable[[schemathesis.Case], list[Any]] = lambda _: CHECKS,
) -> tuple[int, int]:
    """Runs ``examples`` generated cases of each operation with each token; returns
    (operations, requests made). A failed check raises."""
    made = 0
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        cases = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(
            GenerationMode.NEGATIVE
        )

        @given(case=cases)
        @hypothesis_settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            nonlocal made
            checks = checks_for(case)
            for token in tokens:
                case.call_and_validate(headers={"X-Auth-Token": token}, checks=checks)
                made += 1

        run()
    return operations, made
