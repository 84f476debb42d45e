import pytest
from pydantic import ValidationError

from outdial.config import DIAL_LEAD_SECONDS, Settings


def test_pacing_horizon_defaults_under_the_lease_limit() -> None:
    assert Settings(dialer_lease_seconds=15).pacing_horizon_seconds == 2.0
    short = Settings(dialer_lease_seconds=0.6)
    assert 0 < short.pacing_horizon_seconds < 0.6 * 2 / 3 - DIAL_LEAD_SECONDS


# The limit is two thirds of the lease less the dial lead; each case is just past it or far past.
@pytest.mark.parametrize(
    ("lease", "horizon"),
    [
        (2, 2),
        (2, 2 * 2 / 3 - DIAL_LEAD_SECONDS + 0.001),
        (15, 10),
        (0.15, 0.1 - DIAL_LEAD_SECONDS + 0.001),
    ],
)
def test_a_horizon_a_frozen_dialer_could_outlive_is_refused(lease: float, horizon: float) -> None:
    with pytest.raises(ValidationError, match="PACING_HORIZON"):
        Settings(dialer_lease_seconds=lease, dialer_pacing_horizon_seconds=horizon)
