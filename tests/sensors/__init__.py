"""Tests for the Packly sensors."""
