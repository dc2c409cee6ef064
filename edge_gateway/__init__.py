"""The reference edge gateway: polls the devices of a DTM over Modbus TCP and serves what it measured."""
