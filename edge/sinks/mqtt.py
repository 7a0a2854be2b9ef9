"""MQTT sink (paho-mqtt, QoS 1): survives broker restarts with a bounded local buffer.

Every record is published with QoS 1 into paho's outgoing queue, capped at `buffer` messages
(in flight + waiting). Un-acknowledged messages stay queued while the broker is away and are re-sent
after paho reconnects (reconnect back-off `reconnect_min_s`..`reconnect_max_s`); delivery is at least
once (records carry `seq`, so receivers can drop duplicates). When the buffer is full a new record is
not queued and is counted in `lost`, never dropped silently.
"""
from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from dataclasses import dataclass

from base.schema import POSITIVE, FilePath, Rule, Section, between, setting
from edge.sinks.base import Sink, SinkError


@dataclass(frozen=True, kw_only=True)
class MqttSinkConfig(Section):
    """`{type: mqtt, topic: ...}`: QoS 1 records to a broker, buffered while it is away."""

    type: str
    topic: str = setting(rule=Rule(lambda v: v and not set(v) & set("#+\0"),
                                   "must be a non-empty topic without wildcards"))
    host: str = "127.0.0.1"
    port: int = setting(1883, rule=between(1, 65535))
    client_id: str | None = None
    buffer: int = setting(1000, rule=between(1, 1_000_000))   # records kept while the broker is away; beyond: lost
    keepalive: int = setting(30, rule=between(5, 3600))
    reconnect_min_s: int = setting(1, rule=POSITIVE)
    reconnect_max_s: int = setting(30, rule=POSITIVE)
    username: str | None = None
    password: str | None = None
    tls_ca: FilePath | None = None


class MqttSink(Sink):
    """Publishes JSON records to `topic` on an MQTT broker with QoS 1."""

    name = "mqtt"

    def __init__(self, host: str, port: int, topic: str, client_id: str | None = None,
                 buffer: int = 1000, keepalive: int = 30, reconnect_min_s: int = 1,
                 reconnect_max_s: int = 30, username: str | None = None, password: str | None = None,
                 tls_ca: str | None = None):
        super().__init__()
        import paho.mqtt.client as mqtt  # device extra
        self._mqtt = mqtt
        self.topic, self.buffer = topic, buffer
        self.accepted = 0          # records queued into paho
        self._abandoned = 0        # still unacknowledged when the sink was closed
        self.reconnects = 0
        self._connected = threading.Event()
        self._ever_connected = False
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"keycam-{uuid.uuid4().hex[:12]}",
                                  protocol=mqtt.MQTTv311, clean_session=True)
        self.client.max_queued_messages_set(buffer)
        self.client.max_inflight_messages_set(min(100, buffer))
        self.client.reconnect_delay_set(reconnect_min_s, reconnect_max_s)
        if username:
            self.client.username_pw_set(username, password)
        if tls_ca:
            self.client.tls_set(ca_certs=tls_ca)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        try:
            self.client.connect_async(host, port, keepalive=keepalive)
        except (OSError, ValueError) as exc:
            raise SinkError(f"mqtt sink: bad broker address {host}:{port}: {exc}") from exc
        self.client.loop_start()

    @classmethod
    def from_config(cls, cfg: MqttSinkConfig) -> MqttSink:
        """The sink a validated mqtt sink entry describes."""
        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "type"})

    # paho callbacks (run in paho's network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            if self._ever_connected:
                self.reconnects += 1
            self._ever_connected = True
            self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._count(sent=1)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def pending(self) -> int:
        """Records queued locally and not yet acknowledged by the broker."""
        return self.accepted - self.sent - self._abandoned

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def _send(self, payload: bytes) -> None:
        info = self.client.publish(self.topic, payload, qos=1)
        if info.rc in (self._mqtt.MQTT_ERR_SUCCESS, self._mqtt.MQTT_ERR_NO_CONN):
            with self._count_lock:   # NO_CONN: queued in paho, sent after reconnect
                self.accepted += 1
        elif info.rc == self._mqtt.MQTT_ERR_QUEUE_SIZE:
            self._count(lost=1)
            raise SinkError(f"mqtt sink: local buffer full ({self.buffer} records unacknowledged), "
                            "dropping new records")
        else:
            self._count(lost=1)
            raise SinkError(f"mqtt sink: publish failed: {self._mqtt.error_string(info.rc)}")

    def flush(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.pending > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.pending == 0

    def close(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        self.client.disconnect()
        self.client.loop_stop()
        left = self.pending
        with self._count_lock:
            self._abandoned += left
            self.lost += left

    def stats(self) -> dict[str, int]:
        return {"sent": self.sent, "lost": self.lost, "pending": self.pending,
                "reconnects": self.reconnects, "connected": int(self.connected)}
