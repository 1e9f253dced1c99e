"""Moved to ``airflow_provider_packly.core.settings``; re-exported here so old imports keep working."""

from __future__ import annotations

from airflow_provider_packly.core import settings
from airflow_provider_packly.core.settings import *

__all__ = settings.__all__
