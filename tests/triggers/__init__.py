"""Tests for the Packly triggers."""
