"""The retry policy's sleep and clock, faked: a test sees each wait and nothing sleeps for real."""

from __future__ import annotations

import dataclasses

import pytest

from airflow_provider_packly.hooks import packly as packly_hook


class FakeTime:
    """The retry policy's clock and sleep: a wait is recorded and moves the clock, nothing sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


@pytest.fixture
def fake_time(monkeypatch):
    """Every hook's retry policy waits on a ``FakeTime`` instead of for real."""
    fake, real = FakeTime(), packly_hook.retry_policy_for

    def policy_for(connection):
        return dataclasses.replace(real(connection), sleep=fake.sleep, asleep=fake.asleep, clock=fake.clock)

    monkeypatch.setattr(packly_hook, "retry_policy_for", policy_for)
    return fake
