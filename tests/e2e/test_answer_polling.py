"""lambdad busy-polls a warm environment for its answer while that is the only invocation
running (scheduler/answer_polling.py): the status document counts the polls, and what the
function answers is unchanged."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Server, create_function, module_server

# A generous budget, so a loaded CI machine still answers within it: the polls are counted.
polling_server = module_server("polling", "--answer-polling", "500000")
no_polling_server = module_server("nopolling", "--answer-polling", "0")

ECHO = "def handler(event, context):\n    return event\n"
SLOW = "import time\n\ndef handler(event, context):\n    time.sleep(0.6)\n    return event\n"


def _polling(server: Server) -> dict[str, Any]:
    return dict(server.status()["answerPolling"])


def _invoke(lam: Any, name: str, value: int) -> Any:
    reply = lam.invoke(FunctionName=name, Payload=json.dumps({"n": value}))
    assert "FunctionError" not in reply
    return json.loads(reply["Payload"].read())


def test_warm_answers_of_a_fast_function_are_polled_for(polling_server: Server) -> None:
    lam = polling_server.client()
    name = create_function(lam, {"app.py": ECHO})
    before = _polling(polling_server)
    assert before["budget_microseconds"] == 500_000
    for i in range(5):
        assert _invoke(lam, name, i) == {"n": i}
    after = _polling(polling_server)
    polls = after["polls"] - before["polls"]
    assert polls == 4  # each warm invocation; the cold start's first event is pushed
    assert after["answered"] - before["answered"] == polls


def test_a_slow_function_is_slept_on(polling_server: Server) -> None:
    lam = polling_server.client()
    name = create_function(lam, {"app.py": SLOW})
    before = _polling(polling_server)
    for i in range(3):
        assert _invoke(lam, name, i) == {"n": i}
    assert _polling(polling_server)["polls"] == before["polls"]


def test_polling_can_be_turned_off(no_polling_server: Server) -> None:
    lam = no_polling_server.client()
    name = create_function(lam, {"app.py": ECHO})
    for i in range(3):
        assert _invoke(lam, name, i) == {"n": i}
    assert _polling(no_polling_server) == {"budget_microseconds": 0, "polls": 0, "answered": 0}
