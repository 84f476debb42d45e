from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """All configuration, read from `OUTDIAL_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="OUTDIAL_", env_file=".env", extra="ignore")

    database_url: str = "sqlite:///outdial.db"
    telephony_provider: Literal["simulated", "sip", "plivo", "twilio"] = "simulated"
    simulated_speed: float = Field(default=1.0, gt=0)
    simulated_cdr: str | None = None

    # WebRTC participants join a LiveKit-compatible room with a token signed by these.
    livekit_url: str = "ws://localhost:7880"
    livekit_api_key: str = "devkey"
    livekit_api_secret: str = "outdial-development-secret-change-me"
    webrtc_token_ttl_seconds: int = Field(default=3600, gt=0)

    default_max_concurrency: int = Field(default=50, ge=1)
    default_calls_per_second: float = Field(default=10.0, gt=0)

    # The dialer. Leases are short so that a killed dialer's calls are reconciled quickly.
    dialer_lease_seconds: float = Field(default=15.0, gt=0)
    dialer_batch_size: int = Field(default=200, ge=1)
    dialer_poll_seconds: float = Field(default=0.2, gt=0)
    dialer_shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    dialer_pacing_horizon_seconds: float = Field(default=2.0, gt=0)

    idempotency_ttl_seconds: int = Field(default=24 * 3600, gt=0)


@lru_cache
def get_settings() -> Settings:
    return Settings()
