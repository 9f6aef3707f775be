"""How long a refused client is told to wait (`Retry-After`), sized to the overload.

A fixed `Retry-After: 1` is right for a few extra clients and wrong for thousands: with 2,000
clients that honour it, the refused ones came back ~1,400 times a second and answering those
503s took a third of the CPU the model needed (goodput 61 % of capacity, reports/reliability).
The wait here is revised every second so that the refused clients return at about the rate
the service answers (per worker process; only its event loop thread calls it: no lock).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from time import monotonic

WINDOW_S = 1.0  # how often the wait is revised
CEILING_S = 30  # never tell a client to wait longer than this
MAX_GROWTH = 1.5  # per window; faster overshoots (the refused return on the old wait)


class RetryAfter:
    """The `Retry-After` value (whole seconds, >= 1) for the next refusal."""

    def __init__(
        self,
        window_s: float = WINDOW_S,
        ceiling_s: int = CEILING_S,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        self.seconds = 1
        self._told = 1  # the wait in effect during the previous window
        self._window = window_s
        self._ceiling = ceiling_s
        self._clock = clock
        self._start = clock()
        self._answered = 0
        self._refused = 0

    def answered(self) -> None:
        self._revise()
        self._answered += 1

    def refused(self) -> str:
        """Count one refusal; the header value to send with it."""
        self._revise()
        self._refused += 1
        return str(self.seconds)

    def _revise(self) -> None:
        elapsed = self._clock() - self._start
        if elapsed < self._window:
            return
        # The clients refused in this window were mostly told the previous window's wait, so
        # (refused x that wait) estimates how many are waiting; spreading them over what the
        # service answers in a second gives the wait. Moves are bounded: x1.5 up, /2 down.
        target = math.ceil(self._refused * self._told / max(self._answered, 1))
        self._told = self.seconds
        step = max(self.seconds // 2, min(target, math.ceil(self.seconds * MAX_GROWTH)))
        idle = int(elapsed / self._window) - 1  # windows with no request at all: calm
        self.seconds = max(1, min(self._ceiling, step) >> min(idle, 8))
        self._start += elapsed
        self._answered = self._refused = 0
