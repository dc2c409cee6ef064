"""Plausible, changing process values per device type: smooth waveforms plus a little noise.

Counters (energy, yield) integrate the simulated power, so they only ever rise, and a battery's
state of charge moves with its power: positive while charging, negative while discharging.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from contracts.configurator import DeviceType
from contracts.device_catalog import POINT_CATALOG

BATTERY_CAPACITY_WH = 10_000
BATTERY_TIME_FACTOR = 60
BATTERY_MIN_SOC = 5.0
BATTERY_MAX_SOC = 95.0


def _wave(t: float, period: float, phase: float = 0.0) -> float:
    return math.sin(2 * math.pi * t / period + phase)


class DeviceSignals:
    """The current engineering value of every catalog point of one device, advanced by ``step``."""

    def __init__(self, device_type: DeviceType, *, seed: int | None = None, start: float = 0.0) -> None:
        if device_type not in POINT_CATALOG:
            raise ValueError(f"unknown device type {device_type!r}")
        self.device_type = device_type
        self._random = random.Random(seed)
        self._t = start
        # A random phase per instance, so two fixtures of one type do not move in lockstep.
        self._phase = self._random.uniform(0, 2 * math.pi)
        self._counters: dict[str, float] = {
            "energy_import": self._random.uniform(10_000, 20_000),
            "daily_yield": self._random.uniform(5, 50),
            "state_of_charge": 50.0,
        }
        self.values: dict[str, float] = {}
        self._compute: Callable[[float], dict[str, float]] = getattr(self, f"_{device_type}")
        self.step(0.0)

    def _noise(self, amplitude: float) -> float:
        return self._random.gauss(0.0, amplitude)

    def step(self, seconds: float) -> dict[str, float]:
        """Advance the simulation clock by ``seconds`` and return the new values."""
        self._t += seconds
        self.values = self._compute(seconds)
        return dict(self.values)

    def _power_meter(self, seconds: float) -> dict[str, float]:
        # Site load minus local generation: swings through zero, so export shows up negative.
        power = 2_000 + 6_000 * _wave(self._t, 60, self._phase) + self._noise(150)
        self._counters["energy_import"] += max(power, 0.0) * seconds / 3_600_000
        return {
            "active_power": power,
            "voltage_l1": 230.0 + 3.0 * _wave(self._t, 23, self._phase) + self._noise(0.3),
            "energy_import": self._counters["energy_import"],
        }

    def _pv_inverter(self, seconds: float) -> dict[str, float]:
        power = max(0.0, 8_000 + 6_000 * _wave(self._t, 90, self._phase) + self._noise(200))
        self._counters["daily_yield"] += power * seconds / 3_600_000
        return {"ac_power": power, "daily_yield": self._counters["daily_yield"]}

    def _battery(self, seconds: float) -> dict[str, float]:
        # Charges and discharges in a slow cycle; the state of charge follows the energy moved
        # through a 10 kWh pack, on a clock sped up 60 times so that a short run shows it move; the
        # reported value carries the estimation noise of a real battery management system.
        power = 5_000 * _wave(self._t, 120, self._phase) + self._noise(100)
        soc_now = self._counters["state_of_charge"]
        if (soc_now >= BATTERY_MAX_SOC and power > 0) or (soc_now <= BATTERY_MIN_SOC and power < 0):
            power = self._noise(10)  # full or empty: the battery management stops the flow
        moved_wh = power * seconds * BATTERY_TIME_FACTOR / 3_600
        soc = self._counters["state_of_charge"] + 100 * moved_wh / BATTERY_CAPACITY_WH
        self._counters["state_of_charge"] = min(BATTERY_MAX_SOC, max(BATTERY_MIN_SOC, soc))
        reported = min(100.0, max(0.0, self._counters["state_of_charge"] + self._noise(0.15)))
        return {"state_of_charge": reported, "power": power}
