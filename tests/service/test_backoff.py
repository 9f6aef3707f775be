from __future__ import annotations

import itertools
import math

from service.backoff import CEILING_S, RetryAfter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def window(r: RetryAfter, clock: Clock, answered: int, refused: int) -> str:
    """One second of traffic: `answered` requests served, `refused` refused; the header value
    the last refusal got."""
    value = ""
    for _ in range(answered):
        r.answered()
    for _ in range(refused):
        value = r.refused()
    clock.now += 1.0
    return value


def test_a_few_refusals_get_one_second() -> None:
    clock = Clock()
    r = RetryAfter(clock=clock)
    assert [window(r, clock, 300, 50) for _ in range(5)] == ["1"] * 5


def test_the_wait_grows_while_refusals_outnumber_answers_by_at_most_half() -> None:
    clock = Clock()
    r = RetryAfter(clock=clock)
    # 2,000 clients for a service that answers 300/s: the first wait is still 1 s
    values = [int(window(r, clock, 300, 1700)) for _ in range(12)]
    assert values[0] == 1
    assert all(b <= math.ceil(1.5 * a) for a, b in itertools.pairwise(values))
    assert values == sorted(values) and values[-1] == CEILING_S


def test_it_settles_where_refused_clients_return_at_about_the_answer_rate() -> None:
    clock = Clock()
    for waiting in (1700, 4700):  # clients outside the queue; the service answers 300/s
        r = RetryAfter(clock=clock)
        told = [1]
        for _ in range(30):  # clients return after the wait they were told a window ago
            window(r, clock, 300, waiting // told[-1])
            told.append(r.seconds)
        assert waiting / 300 <= r.seconds <= waiting / 300 + 1
        assert told[-8:] == [r.seconds] * 8  # settled, no oscillation


def test_calm_brings_it_back_to_one() -> None:
    clock = Clock()
    r = RetryAfter(clock=clock)
    for _ in range(12):
        window(r, clock, 100, 5000)
    assert r.seconds == CEILING_S
    clock.now += 3600  # an hour without refusals
    assert r.refused() == "1"


def test_no_answers_at_all_is_still_bounded() -> None:
    clock = Clock()
    r = RetryAfter(clock=clock)
    for _ in range(20):
        window(r, clock, 0, 10)
    assert r.seconds == CEILING_S
