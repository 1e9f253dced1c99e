"""Moved to ``airflow_provider_packly.core.errors``; re-exported here so old imports (and old pickles,
which name ``_error_from_dict`` here) keep working."""

from __future__ import annotations

from airflow_provider_packly.core import errors
from airflow_provider_packly.core.errors import *
from airflow_provider_packly.core.errors import _error_from_dict  # noqa: F401 (old pickles name it here)

__all__ = errors.__all__
