import pytest
from pydantic import ValidationError

from outdial.config import Settings


def test_pacing_horizon_defaults_under_the_lease_limit() -> None:
    assert Settings(dialer_lease_seconds=15).pacing_horizon_seconds == 2.0
    short = Settings(dialer_lease_seconds=0.6)
    assert 0 < short.pacing_horizon_seconds < 0.6 * 2 / 3 - 0.1


@pytest.mark.parametrize(("lease", "horizon"), [(2, 2), (2, 1.24), (15, 10), (0.15, 0.01)])
def test_a_horizon_a_frozen_dialer_could_outlive_is_refused(lease: float, horizon: float) -> None:
    with pytest.raises(ValidationError, match="PACING_HORIZON"):
        Settings(dialer_lease_seconds=lease, dialer_pacing_horizon_seconds=horizon)
