from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from outdial.db import Base, BigInt


class RateCounter(Base):
    """One rate-limit bucket's counts: hits in its current window and in the one before (a
    sliding-window counter). Shared by every API process on PostgreSQL, where the table is
    UNLOGGED: counts need no crash safety, and skipping the WAL keeps the hot path cheap."""

    __tablename__ = "rate_limit_counters"

    bucket: Mapped[str] = mapped_column(String(100), primary_key=True)
    window_index: Mapped[int] = mapped_column(BigInt)
    """The window the counts are for: Unix time // the bucket's window length."""
    hits: Mapped[int] = mapped_column(Integer)
    previous_hits: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[int] = mapped_column(BigInt, index=True)
    """Unix time after which the row says nothing any more (pruned from time to time)."""
