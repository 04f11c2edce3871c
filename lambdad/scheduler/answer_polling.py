"""AnswerPolling: whether lambdad busy-polls a warm environment for its answer.

When the only invocation in flight is handed to a warm environment, lambdad has nothing else to
do until the runtime answers — usually within ~50-130 µs for a fast handler. Sleeping in epoll
meanwhile means being woken by the answer: on a VM whose idle vCPUs halt (this one: no guest
halt polling) that wake-up is an inter-processor interrupt and a halted vCPU brought back,
~60 µs of a ~430 µs warm invocation. Polling the connection instead keeps lambdad's CPU awake,
and the answer is read the moment it lands.

Polling only pays when it is short and nothing else is waiting for the event loop, so it is
bounded three ways: only while this is the one invocation lambdad is running (any other request
or answer would wait behind the poll), only for environments whose recent invocations answered
within the budget (a 1 s handler is slept on, as before), and never longer than the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Weight of the newest duration in an environment's typical one.
_NEWEST_WEIGHT = 0.25


@dataclass(frozen=True)
class PollingStatistics:
    budget_microseconds: int
    polls: int  # budgets granted
    answered: int  # polls that saw the answer arrive within the budget


class AnswerPolling:
    """Counts the invocations lambdad is running and grants polling budgets."""

    def __init__(self, budget_us: int) -> None:
        if budget_us < 0:
            raise ValueError("the polling budget cannot be negative")
        self.budget_ns = budget_us * 1000
        self.running = 0
        self.polls = 0
        self.answered = 0

    def started(self) -> None:
        self.running += 1

    def ended(self) -> None:
        self.running -= 1

    def budget_for(self, typical_s: float) -> int:
        """Nanoseconds to poll for the answer of an environment whose invocations typically
        take `typical_s`: 0 (sleep) unless it is the only invocation running and typically
        answers within the budget."""
        if not self.budget_ns or self.running != 1 or typical_s * 1e9 > self.budget_ns:
            return 0
        self.polls += 1
        return self.budget_ns

    def polled(self, answered: bool) -> None:
        self.answered += answered

    def statistics(self) -> PollingStatistics:
        return PollingStatistics(self.budget_ns // 1000, self.polls, self.answered)


def typical_duration(previous: float, newest: float) -> float:
    """An environment's typical invocation duration (seconds), an exponentially weighted
    average; `previous` is infinite before the first."""
    if math.isinf(previous):
        return newest
    return previous + _NEWEST_WEIGHT * (newest - previous)
