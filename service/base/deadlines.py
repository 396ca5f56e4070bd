"""Many coarse deadlines for the price of one timer: the request body and header deadlines.

`asyncio.timeout` (or `loop.call_later` + cancel) on every request costs a TimerHandle, a heap push
and a cancellation that stays in the loop's heap until it is popped: 5-12 us measured per request
(bench/asgi_cost.py), as much as decoding a small request's whole body. These deadlines almost
never fire. A `DeadlineSweeper` keeps them in a set and checks them all on one timer that runs
only while some are pending, every `tick_s`: arming and cancelling one is a set insert and delete.

A deadline fires within `tick_s` *before* it is due, never after (for delays of at least
`tick_s`, 0.1 s): a setting of 30 s cuts a client off between 29.9 and 30 s.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable

log = logging.getLogger(__name__)

TICK_S = 0.1


class Deadline:
    __slots__ = ("when", "callback", "fired", "_sweeper")

    def __init__(self, sweeper: DeadlineSweeper, when: float, callback: Callable[[], object]):
        self._sweeper = sweeper
        self.when = when
        self.callback = callback
        self.fired = False

    def cancel(self) -> None:
        self._sweeper._pending.discard(self)


class DeadlineSweeper:
    """Deadlines on one event loop, all checked by one periodic timer (armed while any is pending)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tick_s: float = TICK_S):
        if tick_s <= 0:
            raise ValueError(f"tick_s must be > 0, got {tick_s}")
        self.loop = loop
        self.tick_s = tick_s
        self._pending: set[Deadline] = set()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, delay_s: float, callback: Callable[[], object]) -> Deadline:
        """Call `callback` (on the loop) about `delay_s` from now, unless the deadline is cancelled first."""
        deadline = Deadline(self, 0.0, callback)
        self.rearm(deadline, delay_s)
        return deadline

    def rearm(self, deadline: Deadline, delay_s: float) -> None:
        """Arm `deadline` (made by `add`, pending or not) again, `delay_s` from now: a connection
        re-uses one for every request instead of making a new one."""
        deadline.when = self.loop.time() + delay_s
        deadline.fired = False
        self._pending.add(deadline)
        if self._timer is None:
            self._timer = self.loop.call_later(min(self.tick_s, max(delay_s, 0.0)), self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        horizon = self.loop.time() + self.tick_s  # due before the next sweep: now, early rather than late
        due = [deadline for deadline in self._pending if deadline.when <= horizon]
        for deadline in due:
            self._pending.discard(deadline)
            deadline.fired = True
            try:
                deadline.callback()
            except Exception:  # one bad callback must not stop the others
                log.exception("deadline callback failed")
        if self._pending:
            self._timer = self.loop.call_later(self.tick_s, self._sweep)


_sweepers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DeadlineSweeper] = weakref.WeakKeyDictionary()


_last: DeadlineSweeper | None = None  # a process serves from one loop: skip the weak-key lookup (~1 us)


def sweeper(loop: asyncio.AbstractEventLoop | None = None) -> DeadlineSweeper:
    """The sweeper of `loop` (default: the running loop), made on first use."""
    global _last
    loop = loop or asyncio.get_running_loop()
    last = _last
    if last is not None and last.loop is loop:
        return last
    found = _sweepers.get(loop)
    if found is None:
        found = _sweepers[loop] = DeadlineSweeper(loop)
    _last = found
    return found
