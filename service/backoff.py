"""How long a refused client is told to wait (`Retry-After`), sized to the overload.

A fixed `Retry-After: 1` is right for a few extra clients and wrong for thousands: the refused ones
come back many times a second, and answering those 503s takes the CPU the model needs (figures:
reports/experiments.md, reports/reliability). Here the service remembers when it told each refused
client to come back, so it knows how many are away; the wait it hands out spreads them over what it
answers per second (with jitter, so they do not return in one wave). Per worker process; only its
event loop calls it: no lock.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from time import monotonic

WINDOW_S = 1.0  # how often the wait is revised
CEILING_S = 30  # never tell a client to wait longer than this


class RetryAfter:
    """The `Retry-After` value (whole seconds, >= 1) for the next refusal."""

    def __init__(
        self,
        window_s: float = WINDOW_S,
        ceiling_s: int = CEILING_S,
        clock: Callable[[], float] = monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.seconds = 1  # the wait handed out (before jitter)
        self._window = window_s
        self._ceiling = ceiling_s
        self._clock = clock
        self._rng = rng or random.Random()
        self._start = clock()
        self._answered = 0
        self._away: dict[int, int] = {}  # when refused clients were told to return -> how many

    def answered(self) -> None:
        self._revise()
        self._answered += 1

    def refused(self) -> str:
        """Count one refusal; the header value to send with it."""
        self._revise()
        wait = self.seconds
        if wait >= 3:  # +-1/3, mean unchanged below the ceiling, which holds for the jitter too
            wait = min(self._ceiling, self._rng.randint(wait - wait // 3, wait + wait // 3))
        back = int((self._clock() + wait) * 10)  # tenths of a second
        self._away[back] = self._away.get(back, 0) + 1
        return str(wait)

    def _revise(self) -> None:
        now = self._clock()
        elapsed = now - self._start
        if elapsed < self._window:
            return
        for tenth in [t for t in self._away if t <= now * 10]:  # came back by now
            del self._away[tenth]
        away = sum(self._away.values())
        per_second = max(self._answered / elapsed, 1.0)
        self.seconds = max(1, min(self._ceiling, math.ceil(away / per_second)))
        self._start = now
        self._answered = 0
