"""Digital-twin simulators that stand in for site hardware (Modbus TCP and SNMP)."""
