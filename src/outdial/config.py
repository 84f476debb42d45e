import os
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, PositiveFloat, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DIAL_LEAD_SECONDS = 0.002
"""Dial slots are reserved this far ahead of the claim, plus the claim's own cost per job, so
that a slot has rarely passed by the time the claim that reserved it has committed (a dial up
to the pacing slack late still keeps to its caller ID's pace)."""

DEVELOPMENT_LIVEKIT_SECRET = "outdial-development-secret-change-me"


class Settings(BaseSettings):
    """All configuration, read from `OUTDIAL_*` environment variables."""

    # Errors never echo the input: it holds the carriers' auth tokens.
    model_config = SettingsConfigDict(
        env_prefix="OUTDIAL_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    database_url: str = "sqlite:///outdial.db"
    telephony_provider: Literal["simulated", "sip", "plivo", "twilio", "livekit"] = "simulated"
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

    # WebRTC participants join a LiveKit-compatible room with a token signed by these. The
    # livekit provider also dials PSTN participants into calls' rooms through the outbound
    # SIP trunk named here, and takes LiveKit's webhooks signed with this key and secret.
    livekit_url: str = "ws://localhost:7880"
    livekit_api_key: str = "devkey"
    livekit_api_secret: str = DEVELOPMENT_LIVEKIT_SECRET
    livekit_sip_trunk_id: str | None = None
    webrtc_token_ttl_seconds: int = Field(default=3600, gt=0)
    # A call with WebRTC participants only ends on POST /v1/calls/{id}/end, or (where the
    # provider cannot see who is in its room) once it has been open this long: dialers look
    # for such calls every `webrtc_idle_sweep_seconds` (README, "WebRTC participants").
    webrtc_idle_limit_seconds: float = Field(default=2 * 3600, gt=0)
    webrtc_idle_sweep_seconds: float = Field(default=60.0, gt=0)

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
    # Idle dialers look for work that became due by the clock (retries, calling windows) this
    # often; work queued through the API wakes them at once (dialer/jobs.wake_dialers).
    dialer_poll_seconds: float = Field(default=1.0, gt=0)
    dialer_shutdown_grace_seconds: float = Field(default=30.0, ge=0)
    dialer_pacing_horizon_seconds: float | None = Field(
        default=None, gt=0, description="How far ahead dial slots are reserved [at most 2 s]."
    )
    # A carrier that does not take dials (README, "When the trunk is down"): a job whose dial
    # it never took waits these delays in turn (the last one repeats), and after that many
    # such dials in a row a dialer claims nothing for the cool-down, then probes with one
    # dial at a time until the carrier takes one.
    dialer_unreachable_backoff_seconds: list[PositiveFloat] = Field(
        default=[10.0, 30.0, 60.0, 300.0], min_length=1
    )
    dialer_breaker_failures: int = Field(default=5, ge=1)
    dialer_breaker_cool_down_seconds: float = Field(default=30.0, gt=0)

    idempotency_ttl_seconds: int = Field(default=24 * 3600, gt=0)

    # Operating it: /metrics (optionally behind a Bearer token), the queue gauge's freshness,
    # the dialer's own metrics listener, and logs (JSON off a terminal unless told otherwise).
    metrics_token: SecretStr | None = None
    metrics_queue_max_age_seconds: float = Field(default=10.0, gt=0)
    dialer_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    dialer_metrics_host: str = "127.0.0.1"
    log_format: Literal["json", "text"] | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Rate limits (outdial.ratelimit): requests per window (a second by default) with one
    # secret key, with one publishable key (it sits in public web pages) and from one client
    # address, and unknown keys per minute from one address before it is locked out. 0 turns
    # a limit off.
    rate_limit_per_secret_key: int = Field(default=100, ge=0)
    rate_limit_per_publishable_key: int = Field(default=10, ge=0)
    rate_limit_per_ip: int = Field(default=200, ge=0)
    rate_limit_window_seconds: int = Field(default=1, ge=1, le=3600)
    auth_failures_per_ip: int = Field(default=20, ge=0)

    # Request bodies (see request_limits.py and README, "Limits"). 2 MiB holds a 500-recipient
    # batch with about 4 KB of metadata per recipient, or 10,000 JSON contacts of ~200 bytes.
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    body_idle_seconds: float = Field(default=30.0, gt=0)
    body_deadline_seconds: float = Field(default=60.0, gt=0)

    # Webhooks (API.md, "Events"): private URLs are for tests and local development only.
    webhook_allow_private_urls: bool = False
    webhook_timeout_seconds: float = Field(default=15.0, gt=0)
    webhook_retry_schedule: list[Annotated[float, Field(ge=0)]] = Field(
        default=[5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400],
        min_length=1,
        description="Seconds between a failed try and the next (the contract's schedule).",
    )
    webhook_concurrency: int = Field(default=512, ge=1, le=10_000)
    webhook_endpoint_concurrency: int = Field(default=64, ge=1, le=10_000)
    webhook_poll_seconds: float = Field(default=0.05, gt=0)

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
            "livekit": ("livekit_sip_trunk_id", "livekit_api_secret"),
        }.get(self.telephony_provider, ())
        missing = [f"OUTDIAL_{name.upper()}" for name in needed if not getattr(self, name)]
        if self.telephony_provider == "livekit" and (
            self.livekit_api_secret == DEVELOPMENT_LIVEKIT_SECRET
        ):
            # Its webhooks are trusted for their signature: a secret anyone can read in this
            # file would let anyone end calls.
            missing.append("OUTDIAL_LIVEKIT_API_SECRET")
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
