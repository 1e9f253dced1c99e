"""Tests for the Packly example dags."""
