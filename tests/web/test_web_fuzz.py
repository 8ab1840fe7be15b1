"""Fuzz the job API from its own OpenAPI description (schemathesis): no 500s, no response
that breaks the schema, every bad input rejected. Bounded examples: well under a minute."""

from __future__ import annotations

from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

EXAMPLES = 20  # per operation and phase; 10 operations: about 20-30 s on 2 shared vCPUs


@pytest.fixture
def web_schema(app: Any) -> Any:
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("web_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_description(case: Any, key: str) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {key}"})
