"""Each stream's share of the in-flight memory budget (every stream transport).

A stream holds memory for as long as it is open (a WebSocket connection's buffers and tail, a gRPC
stream's sequences and the message it is answering): without a cap, one client's stream could
hold most of the worker's in-flight budget (issue 24: one authenticated gRPC stream restarting one
sequence held 95% of it) and every other request would answer 503. So every stream has an account
(`StreamAccount`), capped at MONOSERVE_STREAM_MAX_BUDGET_SHARE of the budget, and all of its
reservations, the long-held ones and each chunk's working memory alike, go through `StreamLimits`:
over the stream's cap a reservation is refused (413 when it alone could never fit in the share,
503 + Retry-After when the stream's other reservations are in the way), before the shared budget
is asked.
"""

from __future__ import annotations

from typing import Any

from service.base.errors import OverloadedError, PayloadTooLargeError
from service.compute.request import RETRY_AFTER_S, Limits, MemoryBudget

SHARE_SETTING = "MONOSERVE_STREAM_MAX_BUDGET_SHARE"


class StreamAccount:
    """What one stream holds now in the in-flight budget, and the most it may hold."""

    def __init__(self, budget: MemoryBudget, share: float):
        self.budget = budget
        self.cap = max(1, int(budget.capacity * share))
        self.held = 0

    @classmethod
    def for_service(cls, service: Any) -> StreamAccount:
        return cls(service.budget, service.settings.stream_max_budget_share)

    def limits(self, settings: Any) -> StreamLimits:
        """A Limits whose reservations count against this stream's share (close() returns them)."""
        return StreamLimits(self, settings.max_elements, settings.max_rows, settings.max_signal_length)


class StreamLimits(Limits):
    """Limits of one reservation of a stream: the stream's share first, then the shared budget."""

    def __init__(self, account: StreamAccount, max_elements: int, max_rows: int, max_signal_length: int):
        super().__init__(account.budget, max_elements, max_rows, max_signal_length)
        self.account = account

    def reserve(self, amount: int, what: str | tuple[str, int]) -> None:
        if amount <= 0:
            return
        account = self.account
        if account.held + amount > account.cap:
            if isinstance(what, tuple):
                what = f"'{what[0]}' ({what[1]} values)"
            if amount > account.cap:
                raise PayloadTooLargeError(
                    f"{what} needs about {amount / 2**20:.1f} MiB, more than one stream may hold: "
                    f"{account.cap / 2**20:.1f} MiB ({SHARE_SETTING} of the in-flight budget); send smaller chunks",
                    limit=account.cap)
            raise OverloadedError(
                f"this stream holds {account.held / 2**20:.1f} of the {account.cap / 2**20:.1f} MiB one stream may "
                f"hold ({SHARE_SETTING} of the in-flight budget): end a sequence, or retry once its chunks are "
                "answered", headers={"Retry-After": RETRY_AFTER_S}, limit=account.cap)
        super().reserve(amount, what)
        account.held += amount

    def close(self) -> None:
        self.account.held -= self.reserved
        super().close()
