"""The register map of each device type the platform knows.

EDP engineers DTMs with these points, the edge gateway polls them, and the industrial fixtures
serve them: one table, so the three always agree.
"""

from __future__ import annotations

from contracts.configurator import DeviceType
from contracts.dtm import Point

# A small register catalog per device type: enough for the gateway to poll something real.
# Addresses follow the common vendor layout of one 32-bit value per two registers.
POINT_CATALOG: dict[DeviceType, tuple[Point, ...]] = {
    "power_meter": (
        Point(name="active_power", address=0, register_kind="input", data_type="int32", scale=1.0, unit="W"),
        Point(name="voltage_l1", address=2, register_kind="input", data_type="uint16", scale=0.1, unit="V"),
        Point(
            name="energy_import", address=4, register_kind="input", data_type="uint32", scale=0.01, unit="kWh"
        ),
    ),
    "pv_inverter": (
        Point(name="ac_power", address=0, register_kind="holding", data_type="int32", scale=1.0, unit="W"),
        Point(
            name="daily_yield", address=2, register_kind="holding", data_type="uint32", scale=0.1, unit="kWh"
        ),
    ),
    "battery": (
        Point(
            name="state_of_charge",
            address=0,
            register_kind="holding",
            data_type="uint16",
            scale=0.1,
            unit="%",
        ),
        # Positive while charging, negative while discharging.
        Point(name="power", address=1, register_kind="holding", data_type="int32", scale=1.0, unit="W"),
    ),
}
