"""Tests for the Packly operators."""
