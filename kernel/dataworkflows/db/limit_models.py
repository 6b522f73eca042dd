"""The shared token buckets of rate limits (docs/limits.md): one row per limited key.

Only PostgreSQL uses the table (every API process shares its buckets there); on SQLite,
with one engine process, the buckets live in memory. The bucket is kept as GCRA's
*theoretical arrival time* (``tat``, Unix seconds on the database's clock): a request may
pass while ``tat - now`` stays within the burst.
"""

from __future__ import annotations

from sqlalchemy import Double, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from dataworkflows.db.models import Base


class RateLimitBucket(Base):
    """One limited key (``api:tenant:<t>``, ``api:principal:<t>:<p>``, ``trigger:<id>``)."""

    __tablename__ = "rate_limit_buckets"

    key: Mapped[str] = mapped_column(String(600), primary_key=True)
    #: when the bucket is full again, in Unix seconds (GCRA's theoretical arrival time)
    tat: Mapped[float] = mapped_column(Double)
    #: requests the last reservation granted (0: refused)
    granted: Mapped[int] = mapped_column(Integer)
    #: the database's clock at the last reservation, in Unix seconds
    updated_at: Mapped[float] = mapped_column(Double)
    #: the limit the last reservation was taken under: seconds per request, and burst
    interval_s: Mapped[float] = mapped_column(Double)
    burst: Mapped[int] = mapped_column(Integer)


rate_limit_buckets = RateLimitBucket.__table__
