import os
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DIAL_LEAD_SECONDS = 0.1
"""Dial slots are reserved this far ahead, so that a slot has not passed by the time the claim
that reserved it has committed."""


class Settings(BaseSettings):
    """All configuration, read from `OUTDIAL_*` environment variables."""

    # Errors never echo the input: it holds the carriers' auth tokens.
    model_config = SettingsConfigDict(
        env_prefix="OUTDIAL_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    database_url: str = "sqlite:///outdial.db"
    telephony_provider: Literal["simulated", "sip", "plivo", "twilio"] = "simulated"
    simulated_speed: float = Field(default=1.0, gt=0)
    simulated_cdr: str | None = None

    # Plivo and Twilio call back at this base URL (as the carrier reaches it, e.g.
    # https://outdial.example.com); their signatures are checked against it.
    public_url: str | None = None
    plivo_auth_id: str | None = None
    plivo_auth_token: SecretStr | None = None
    plivo_api_url: str = "https://api.plivo.com"
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_api_url: str = "https://api.twilio.com"

    # WebRTC participants join a LiveKit-compatible room with a token signed by these.
    livekit_url: str = "ws://localhost:7880"
    livekit_api_key: str = "devkey"
    livekit_api_secret: str = "outdial-development-secret-change-me"
    webrtc_token_ttl_seconds: int = Field(default=3600, gt=0)

    # The sip provider: the trunk every call goes through (sip:host:port, UDP), its digest
    # credentials if it challenges, and our local address (default: an ephemeral port on the
    # interface that reaches the trunk).
    sip_trunk: str | None = None
    sip_username: str | None = None
    sip_password: SecretStr | None = None
    sip_bind_host: str | None = None
    sip_bind_port: int = Field(default=0, ge=0, le=65535)

    default_max_concurrency: int = Field(default=50, ge=1)
    default_calls_per_second: float = Field(default=10.0, gt=0)

    # The dialer. Leases are short so that a killed dialer's calls are reconciled quickly.
    dialer_lease_seconds: float = Field(default=15.0, gt=0)
    dialer_batch_size: int = Field(default=200, ge=1)
    dialer_poll_seconds: float = Field(default=0.2, gt=0)
    dialer_shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    dialer_pacing_horizon_seconds: float | None = Field(
        default=None, gt=0, description="How far ahead dial slots are reserved [at most 2 s]."
    )

    idempotency_ttl_seconds: int = Field(default=24 * 3600, gt=0)

    @property
    def pacing_horizon_seconds(self) -> float:
        if self.dialer_pacing_horizon_seconds is not None:
            return self.dialer_pacing_horizon_seconds
        return min(2.0, self._horizon_limit() / 2)

    def _horizon_limit(self) -> float:
        return self.dialer_lease_seconds * 2 / 3 - DIAL_LEAD_SECONDS

    @model_validator(mode="after")
    def _slots_end_before_leases(self) -> "Settings":
        # A dialer frozen past its lease must find every dial slot it reserved already passed
        # when it wakes, so it never places an attempt another dialer has reconciled. Its
        # lease can expire 2/3 of a lease after its last reservation (heartbeats come every
        # third of a lease); its slots lie at most the horizon plus the lead ahead.
        limit = self._horizon_limit()
        if not 0 < self.pacing_horizon_seconds < limit:
            raise ValueError(
                f"OUTDIAL_DIALER_PACING_HORIZON_SECONDS must be under {limit:.2f} s "
                "(2/3 of OUTDIAL_DIALER_LEASE_SECONDS less 0.1 s)"
            )
        return self

    @model_validator(mode="after")
    def _carrier_credentials_given(self) -> "Settings":
        needed = {
            "sip": ("sip_trunk",),
            "plivo": ("public_url", "plivo_auth_id", "plivo_auth_token"),
            "twilio": ("public_url", "twilio_account_sid", "twilio_auth_token"),
        }.get(self.telephony_provider, ())
        missing = [f"OUTDIAL_{name.upper()}" for name in needed if not getattr(self, name)]
        if missing:
            raise ValueError(
                f"OUTDIAL_TELEPHONY_PROVIDER={self.telephony_provider} needs "
                + ", ".join(missing)
                + " (from the environment or a file in OUTDIAL_SECRETS_DIR)"
            )
        return self


@lru_cache
def get_settings() -> Settings:
    # Secrets may come from files (one per setting, named like its variable), e.g. mounted
    # by Docker or Kubernetes; the environment wins over them.
    return Settings(_secrets_dir=os.environ.get("OUTDIAL_SECRETS_DIR"))  # type: ignore[call-arg]
