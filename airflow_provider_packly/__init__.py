"""Apache Airflow provider for the Packly REST API (custom packaging: dielines, quotations, orders)."""

from __future__ import annotations

__version__ = "0.1.0"
