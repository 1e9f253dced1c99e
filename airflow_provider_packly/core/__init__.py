"""The provider's pure rules: no I/O and no Airflow import (the sans-I/O style)."""
