from datetime import datetime

from sqlalchemy import Boolean, Float, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from outdial.db import Base, BigInt, JSONType, UTCDateTime, utcnow


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    max_concurrency: Mapped[int] = mapped_column(Integer)
    calls_per_second: Mapped[float] = mapped_column(Float)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Running totals of the ledger and of open holds, in micro-credits; each is changed in the
    # same transaction as the ledger row or hold it summarises, so they never drift.
    balance_micros: Mapped[int] = mapped_column(BigInt, default=0)
    held_micros: Mapped[int] = mapped_column(BigInt, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Dialing permissions (outdial.permissions): the countries the tenant may dial besides
    # those of its own caller IDs (counted unless turned off), and whether premium-rate or
    # shared-cost numbers and the documented high-risk ranges are allowed. ISO 3166-1 codes;
    # "001" stands for the non-geographic codes (+800, +870, +882 …).
    dialing_countries: Mapped[list[str]] = mapped_column(JSONType, default=list)
    dialing_caller_id_countries: Mapped[bool] = mapped_column(Boolean, default=True)
    dialing_allow_premium_rate: Mapped[bool] = mapped_column(Boolean, default=False)
    dialing_allow_high_risk: Mapped[bool] = mapped_column(Boolean, default=False)
