"""Provisioned concurrency on a weighted alias, through boto3 against a real `lambdad serve`.

AWS documents that provisioned concurrency on an alias routing to two versions is distributed
across both by the weights (lambdad's rounding: docs/design.md). The probe function records at
init how it was initialised and a per-environment id, and sleeps INIT_SLEEP seconds first so an
allocation in progress can be seen; each version's provisioned environments are counted by
invoking the version itself in parallel (they are the version's, whichever alias made them).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import create_function
from tests.e2e.test_provisioned import ON_DEMAND, PROVISIONED, together, wait_status

INIT_SLEEP = 1.5
SLOW_PROBE = {
    "app.py": (
        "import os\n"
        "import time\n"
        "import uuid\n\n"
        "time.sleep(float(os.environ['INIT_SLEEP']))\n"
        "INIT_TYPE = os.environ['AWS_LAMBDA_INITIALIZATION_TYPE']\n"
        "ENVIRONMENT = uuid.uuid4().hex\n\n"
        "def handler(event, context):\n"
        "    time.sleep(event.get('sleep', 0))\n"
        "    return {'init': INIT_TYPE, 'env': ENVIRONMENT, 'version': context.function_version}\n"
    )
}


@pytest.fixture
def weighted(lam: Any) -> Iterator[str]:
    """Versions 1 and 2 of a slow-starting probe; alias `live` -> 1, half its traffic to 2."""
    name = create_function(
        lam, SLOW_PROBE, Timeout=30, Environment={"Variables": {"INIT_SLEEP": str(INIT_SLEEP)}}
    )
    lam.publish_version(FunctionName=name)
    lam.update_function_configuration(FunctionName=name, Description="second")
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    lam.publish_version(FunctionName=name)
    lam.create_alias(
        FunctionName=name,
        Name="live",
        FunctionVersion="1",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}},
    )
    yield name
    lam.delete_function(FunctionName=name)


def numbers(config: dict[str, Any]) -> tuple[str, int, int, int]:
    return (
        config["Status"],
        config["RequestedProvisionedConcurrentExecutions"],
        config["AllocatedProvisionedConcurrentExecutions"],
        config["AvailableProvisionedConcurrentExecutions"],
    )


def provisioned_of(lam: Any, name: str, version: str, expected: int) -> set[str]:
    """The ids of version's provisioned environments: `expected` + 1 parallel invocations of
    the version find exactly `expected` of them (the last one spills over to on-demand)."""
    answers = together(lam, name, version, expected + 1, sleep=1.0)
    provisioned = [a for a in answers if a["init"] == PROVISIONED]
    assert len(provisioned) == expected, answers
    assert all("Init Duration" not in a["report"] for a in provisioned), answers
    assert [a["init"] for a in answers].count(ON_DEMAND) == 1, answers
    return {a["env"] for a in provisioned}


def through_alias(lam: Any, name: str) -> tuple[str, dict[str, Any], str]:
    """One invocation of `live`: the executed version, the answer and the REPORT line."""
    response = lam.invoke(FunctionName=name, Qualifier="live", Payload=b"{}", LogType="Tail")
    assert response["StatusCode"] == 200 and "FunctionError" not in response, response
    answer: dict[str, Any] = json.loads(response["Payload"].read())
    log = base64.b64decode(response["LogResult"]).decode()
    report = next(line for line in log.splitlines() if line.startswith("REPORT "))
    return response["ExecutedVersion"], answer, report


def test_a_weighted_alias_splits_its_environments(lam: Any, weighted: str) -> None:
    name = weighted
    put = lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=4
    )
    assert numbers(put) == ("IN_PROGRESS", 4, 0, 0)
    ready = wait_status(lam, name, "live")
    assert numbers(ready) == ("READY", 4, 4, 4)
    # 4 at 0.5: 2 environments of each version.
    environments = {v: provisioned_of(lam, name, v, 2) for v in ("1", "2")}
    ran: dict[str, set[str]] = {"1": set(), "2": set()}
    for _ in range(40):
        version, answer, report = through_alias(lam, name)
        assert answer["version"] == version
        assert answer["init"] == PROVISIONED, answer
        assert "Init Duration" not in report, report
        ran[version].add(answer["env"])
    assert all(ran.values()), ran  # both versions ran (2**-39 odds of a false failure)
    assert all(ran[v] <= environments[v] for v in ran), (ran, environments)
    assert numbers(lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="live")) == (
        "READY",
        4,
        4,
        4,
    )


def test_update_alias_splits_them_again(lam: Any, weighted: str) -> None:
    name = weighted
    lam.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=4
    )
    assert numbers(wait_status(lam, name, "live")) == ("READY", 4, 4, 4)
    # 4 at 0.25: version 1 grows to 3 (one environment initialising), version 2 keeps 1.
    lam.update_alias(
        FunctionName=name, Name="live", RoutingConfig={"AdditionalVersionWeights": {"2": 0.25}}
    )
    moving = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
    assert numbers(moving) == ("IN_PROGRESS", 4, 3, 3)
    assert numbers(wait_status(lam, name, "live")) == ("READY", 4, 4, 4)
    assert len(provisioned_of(lam, name, "1", 3)) == 3
    assert len(provisioned_of(lam, name, "2", 1)) == 1
    # The alias moves wholly to version 2: its 4 environments follow, version 1 keeps none.
    lam.update_alias(
        FunctionName=name,
        Name="live",
        FunctionVersion="2",
        RoutingConfig={"AdditionalVersionWeights": {}},
    )
    moving = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
    assert numbers(moving) == ("IN_PROGRESS", 4, 1, 1)
    assert numbers(wait_status(lam, name, "live")) == ("READY", 4, 4, 4)
    for _ in range(8):
        version, answer, report = through_alias(lam, name)
        assert (version, answer["init"]) == ("2", PROVISIONED)
        assert "Init Duration" not in report, report
    answers = together(lam, name, "1", 2, sleep=0.5)
    assert [a["init"] for a in answers] == [ON_DEMAND, ON_DEMAND], answers
