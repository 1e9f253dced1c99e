"""Moved to ``airflow_provider_packly.core.waiting``; re-exported here so old imports keep working."""

from __future__ import annotations

from airflow_provider_packly.core import waiting
from airflow_provider_packly.core.waiting import *

__all__ = waiting.__all__
