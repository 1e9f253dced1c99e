"""Moved to ``airflow_provider_packly.core.api`` (the statuses to ``core.waiting``); re-exported here
so old imports keep working."""

from __future__ import annotations

from airflow_provider_packly.core import api
from airflow_provider_packly.core.api import *
from airflow_provider_packly.core.waiting import ORDER_STATUSES, PRODUCT_STATUSES

__all__ = ["ORDER_STATUSES", "PRODUCT_STATUSES"]
__all__ += api.__all__
