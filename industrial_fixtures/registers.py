"""Register encoding of a catalog point: engineering value <-> raw Modbus registers.

A point's raw value is ``round(value / scale)`` in its data type; 32-bit types take two registers,
high word first (big-endian word and byte order, the common vendor layout and pymodbus' default).
"""

from __future__ import annotations

import struct

from contracts.dtm import Point

_FORMATS = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I"}
_LIMITS = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}


def register_count(point: Point) -> int:
    """How many 16-bit registers the point occupies."""
    return 2 if point.data_type.endswith("32") else 1


def raw_value(point: Point, value: float) -> int:
    """The integer the device stores for ``value``, clamped to what the data type can hold."""
    low, high = _LIMITS[point.data_type]
    return max(low, min(high, round(value / point.scale)))


def encode(point: Point, value: float) -> list[int]:
    """The registers holding ``value`` for ``point``."""
    packed = struct.pack(_FORMATS[point.data_type], raw_value(point, value))
    return [int.from_bytes(packed[index : index + 2], "big") for index in range(0, len(packed), 2)]


def decode(point: Point, registers: list[int]) -> float:
    """The engineering value (raw value times scale) the registers hold for ``point``."""
    if len(registers) != register_count(point):
        raise ValueError(f"{point.name}: expected {register_count(point)} registers, got {len(registers)}")
    packed = b"".join(int(register).to_bytes(2, "big") for register in registers)
    (raw,) = struct.unpack(_FORMATS[point.data_type], packed)
    return raw * point.scale
