"""Fuzz the job API from its own OpenAPI description (schemathesis): no 500s, no response
that breaks the schema, schema-invalid requests rejected, valid ones accepted.

The default run is bounded (a few examples per operation and phase, derandomised: about
20 s on 2 shared vCPUs); ``-m slow`` runs a longer random search.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

if os.environ.get("CI") == "true":
    import schemathesis  # CI must have it
else:
    schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings

QUICK_EXAMPLES = 10  # per operation and phase; 10 operations
LONG_EXAMPLES = 150


@pytest.fixture
def web_schema(app: Any) -> Any:
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("web_schema")


@schema.parametrize()
@settings(
    max_examples=QUICK_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_api_conforms_to_its_description(case: Any, key: str) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {key}"})


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=LONG_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_description_long(case: Any, key: str) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {key}"})
