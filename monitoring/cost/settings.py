"""Prices and budgets that turn measured CPU- and GPU-seconds into money."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CostSettings(BaseModel):
    core_hour_price: float = Field(0.05, ge=0)
    """Price of one CPU core for one hour (``STREAMINFER_PIPELINE__COST__CORE_HOUR_PRICE``)."""

    gpu_hour_price: float = Field(2.50, ge=0)
    """Price of one GPU for one hour."""

    currency: str = "USD"
    """What the prices are in; reports and alerts print it."""

    daily_budgets: dict[str, float] = {}
    """Per model, the most it may cost per day (UTC); the ``StreaminferCostOverBudget`` alert
    fires when the day's projected spend passes it. Models not listed have no budget."""

    inference_cores: float = Field(1.0, gt=0)
    """Cores one inference call keeps busy on a CPU session (``runtime.intra_op_threads``)."""
