"""The edge agent: reads machines (Modbus TCP, simulator), journals every accepted sample durably, and
forwards it to the platform over MQTT QoS 1, losing nothing across outages, restarts and ``kill -9``."""
