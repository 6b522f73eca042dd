"""Time-ordered ids (UUID version 7, RFC 9562).

Run ids are UUIDv7: the first 48 bits are the Unix time in milliseconds at which the run
was queued, the rest random. They sort by time, which keeps the primary-key index's
inserts at its right edge, and they are the partition key of the ledger on PostgreSQL
when partitioning is on (docs/partitioning.md): a read by run id touches one partition.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime

_VERSION_7 = 0x7 << 76
_VARIANT = 0x2 << 62
_RANDOM_BITS = (1 << 74) - 1


def uuid7(at: datetime | None = None) -> uuid.UUID:
    """A new UUIDv7 for the moment ``at`` (now by default)."""
    ms = int((at.timestamp() if at is not None else time.time()) * 1000)
    rand = int.from_bytes(os.urandom(10), "big") & _RANDOM_BITS
    rand_a, rand_b = rand >> 62, rand & ((1 << 62) - 1)
    return uuid.UUID(
        int=(ms & 0xFFFF_FFFF_FFFF) << 80 | _VERSION_7 | rand_a << 64 | _VARIANT | rand_b
    )


def uuid7_floor(at: datetime) -> uuid.UUID:
    """The smallest UUIDv7 of the millisecond ``at``: a partition bound."""
    return uuid.UUID(int=(int(at.timestamp() * 1000) & 0xFFFF_FFFF_FFFF) << 80)
