from __future__ import annotations

import heapq
import random
from statistics import mean

from service.backoff import CEILING_S, RetryAfter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(clients: int, capacity: int, seconds: int) -> tuple[RetryAfter, list[int]]:
    """`clients` refused clients that each come back when told, against a service that answers
    `capacity` requests a second; returns the policy and the refusals in each second."""
    clock = Clock()
    policy = RetryAfter(clock=clock, rng=random.Random(0))
    returns = [(i / clients, i) for i in range(clients)]  # all arrive in the first second
    refusals = [0] * seconds
    step = 0.01
    while clock.now < seconds:
        for _ in range(int(capacity * step)):
            policy.answered()
        while returns and returns[0][0] <= clock.now:
            _, client = heapq.heappop(returns)
            refusals[int(clock.now)] += 1
            heapq.heappush(returns, (clock.now + int(policy.refused()), client))
        clock.now += step
    return policy, refusals


def test_a_few_refusals_get_one_second() -> None:
    policy, refusals = simulate(clients=50, capacity=300, seconds=10)
    assert policy.seconds == 1 and refusals[-1] == 50


def test_thousands_of_refused_clients_are_spread_over_the_answer_rate() -> None:
    for clients in (1700, 4700):  # 2,000 and 5,000 connections minus a full queue
        policy, refusals = simulate(clients=clients, capacity=300, seconds=40)
        assert clients / 300 <= policy.seconds <= clients / 300 + 1
        assert refusals[0] > 0.95 * clients  # the first second: everyone is told 1 s
        assert mean(refusals[-20:]) < 1.25 * 300  # then they come back at ~ the answer rate


def test_waits_are_jittered_around_the_target_so_clients_do_not_return_in_waves() -> None:
    clock = Clock()
    policy = RetryAfter(clock=clock, rng=random.Random(1))
    clock.now = 0.5
    for _ in range(3000):  # 3,000 refused in one second (told 1 s), 300 answered
        policy.refused()
    for _ in range(300):
        policy.answered()
    clock.now = 1.0
    values = [int(policy.refused()) for _ in range(1000)]
    assert policy.seconds == 10
    assert min(values) == 7 and max(values) == 13 and abs(mean(values) - 10) < 0.3


def test_once_the_refused_have_come_back_and_nobody_is_refused_it_is_one_again() -> None:
    policy, _ = simulate(clients=4700, capacity=300, seconds=20)
    assert policy.seconds > 10
    clock = policy._clock  # type: ignore[attr-defined]
    clock.now += CEILING_S + 2  # every refused client's return time has passed
    policy.answered()
    assert policy.refused() == "1"


def test_nothing_answered_is_bounded_by_the_ceiling() -> None:
    clock = Clock()
    policy = RetryAfter(clock=clock)
    for second in range(8):
        for i in range(500):  # refused all through each second, nothing answered
            clock.now = second + i / 500
            policy.refused()
    assert policy.seconds == CEILING_S


def test_no_wait_handed_out_exceeds_the_ceiling_jitter_included() -> None:
    clock = Clock()
    policy = RetryAfter(clock=clock, rng=random.Random(0))
    handed: list[int] = []
    for second in range(8):
        for i in range(500):  # nothing answered: the wait climbs to the ceiling
            clock.now = second + i / 500
            handed.append(int(policy.refused()))
    assert policy.seconds == CEILING_S
    assert max(handed) == CEILING_S  # reached, never passed (the jitter used to go on top of it)
    assert min(handed[-500:]) == CEILING_S - CEILING_S // 3  # the jitter still spreads them
