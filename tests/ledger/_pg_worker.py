"""
A worker process for the SIGKILL fault test: it makes holds, commits some, reports them,
then keeps reserving and committing on other lines until it is killed mid-flight.
"""

from __future__ import annotations

from typing import Any

from execbudget.ledger import Ledger, LineKey, LineRequest, OnExpiry

HELD = LineKey("org:killed", "total", "cost")
SPIN = LineKey("org:spin", "total", "cost")
HOLDS = 6
AMOUNT = 10
COMMITTED = 7


def hold_and_spin(url: str, report: Any, ready: Any, spinning: Any) -> None:
    """Report ``(committed, [(rid, charge_on_expiry)])``, then spin until SIGKILL."""
    ledger = Ledger.from_url(url)
    committed = 0
    held: list[tuple[str, bool]] = []
    for i in range(HOLDS + 2):
        charge = i % 2 == 1
        policy = OnExpiry.CHARGE if charge else OnExpiry.RELEASE
        rid = ledger.reserve([LineRequest(HELD, 10**9, AMOUNT)], ttl_s=60, on_expiry=policy)
        if i < 2:
            ledger.commit(rid, {"cost": COMMITTED})
            committed += COMMITTED
        else:
            held.append((rid, charge))
    report.put((committed, held))
    ready.set()
    n = 0
    while True:  # killed from outside, somewhere in here
        rid = ledger.reserve([LineRequest(SPIN, 10**12, 5)], ttl_s=60)
        ledger.commit(rid, {"cost": 3})
        n += 1
        if n == 20:
            spinning.set()
