"""The connector tests use the real MQTT brokers of the MQTT tests (amqtt and Mosquitto)."""

from tests.mqtt.conftest import any_mqtt, mosquitto_factory  # noqa: F401 - fixtures
