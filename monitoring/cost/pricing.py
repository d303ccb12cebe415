"""The arithmetic of cost: seconds to money, per 1,000 answers, and a day's projected spend.

>>> prices = CostSettings(core_hour_price=0.036, gpu_hour_price=3.6)
>>> round(spend(cpu_s=100.0, gpu_s=10.0, prices=prices), 6)
0.011
>>> per_thousand(0.011, answers=2_000)
0.0055
>>> project_daily(spend_today=1.0, observed_s=3_600, left_s=82_800)
24.0
"""

from __future__ import annotations

import math

from streaminfer.monitoring.cost.settings import CostSettings

DAY_S = 86_400


def spend(cpu_s: float, gpu_s: float, prices: CostSettings) -> float:
    """CPU core-seconds and GPU-seconds at the hourly prices."""
    return (cpu_s * prices.core_hour_price + gpu_s * prices.gpu_hour_price) / 3600


def per_thousand(amount: float, answers: float) -> float:
    """``amount`` per 1,000 answers; NaN without answers (nothing to divide by, not free)."""
    return amount * 1000 / answers if answers > 0 else math.nan


def project_daily(spend_today: float, observed_s: float, left_s: float) -> float:
    """Today's spend so far plus the rest of the day at the rate seen today (``observed_s`` is how
    long today's spend was measured over; 0 seconds observed projects nothing more)."""
    if observed_s <= 0:
        return spend_today
    return spend_today + spend_today / observed_s * max(0.0, left_s)


def day_start(now_s: float) -> float:
    """The UTC midnight at or before ``now_s`` (seconds since the epoch)."""
    return now_s - now_s % DAY_S
