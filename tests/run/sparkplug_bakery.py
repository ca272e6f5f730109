"""The Contoso bakery as a Sparkplug B edge node: a publisher with a known ground truth.

:class:`BakeryEdgeNode` plays a :class:`~plantstream.simulators.bakery.BakerySim` over MQTT the
way a Sparkplug B edge node would: one edge node per bakery line (group ``contoso``), one
device per machine; ``NBIRTH`` (``bdSeq``, ``Node Control/Rebirth``), then each device's
``DBIRTH`` with every metric it will ever send (named, aliased, typed; the reasons as nulls
until a stop names one), then ``DDATA`` by alias only, with the node's ``seq`` counting every
message. An ``NCMD`` ``Node Control/Rebirth`` makes it publish its births again with the current
values, before its next data message. Its MQTT will is the ``NDEATH`` with the session's
``bdSeq``. The simulator's messages, and so its ground truth, are the bakery's own.

Data is published with QoS 1 (a Sparkplug node may use 0 for data; the test needs every
message to count the truth exactly).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from plantstream.connectors import sparkplug as sp
from plantstream.simulators.bakery import BakerySim

GROUP = "contoso"
DT = sp.DATATYPES
NAMES: dict[str, tuple[str, str]] = {
    "state": ("State", "Int32"),
    "good_count": ("Counts/Good", "UInt64"),
    "waste_count": ("Counts/Waste", "UInt64"),
    "lost_time_reason": ("Lost Time Reason", "String"),
    "waste_reason": ("Waste Reason", "String"),
    "product": ("Product", "String"),
    "work_order": ("Work Order", "String"),
}
"""Bakery field → (Sparkplug metric name, data type); the condition fields are Doubles named
``Oil Temp F``, ``Dough Weight G`` … (title case)."""
ALWAYS_BORN = ("lost_time_reason", "waste_reason")
"""Fields a machine sends only later: its birth names them with a null value."""


def metric_name(fieldname: str) -> tuple[str, str]:
    return NAMES.get(fieldname, (" ".join(w.capitalize() for w in fieldname.split("_")), "Double"))


def _value(m: Any, data_type: str, value: Any) -> None:
    if value is None:
        m.is_null = True
    elif data_type == "String":
        m.string_value = str(value)
    elif data_type == "Int32":
        m.int_value = int(value) & 0xFFFFFFFF
    elif data_type == "UInt64":
        m.long_value = int(value)
    else:
        m.double_value = float(value)


class BakeryEdgeNode:
    """One Sparkplug B edge node for a bakery line (see the module docstring).

    Parameters
    ----------
    sim
        The bakery (all its machines must be on one line: ``machines`` ≤ 5).
    bdseq
        The session's birth/death sequence number (``bdSeq``): one more per (re)connection.
    """

    def __init__(self, sim: BakerySim, host: str, port: int, *, bdseq: int = 0,
                 client_id: str = "bakery-edge") -> None:
        lines = {self._line(t) for t in (sim.topic(m) for m in sim._machines)}
        assert len(lines) == 1, f"one edge node per line; the simulator has lines {lines}"
        self.sim = sim
        self.node = lines.pop()
        self.bdseq = bdseq
        self.seq = 0
        self.born = False
        self.rebirths_received = 0
        self.published = 0
        self.acked = 0
        self._rebirth = threading.Event()
        self._aliases: dict[tuple[str, str], int] = {}  # (device, field) → alias
        self._last: dict[str, dict[str, Any]] = {}  # device → its fields' current values
        self._fields: dict[str, list[str]] = {}  # device → fields its birth names
        self._connected = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self.client.will_set(self.topic("NDEATH"), self._death(), qos=1)
        self.client.on_connect = lambda c, u, f, r, p: (c.subscribe(self.topic("NCMD"), qos=1),
                                                        self._connected.set())
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.connect(host, port, 30)
        self.client.loop_start()
        assert self._connected.wait(15), f"MQTT broker {host}:{port} did not answer the edge node"

    @staticmethod
    def _line(topic: str) -> str:
        return topic.split("/")[2]  # contoso/{site}/{line}/{machine}

    def topic(self, kind: str, device: str | None = None) -> str:
        return f"spBv1.0/{GROUP}/{kind}/{self.node}" + (f"/{device}" if device else "")

    def _death(self) -> bytes:
        p = sp.new_payload(timestamp=int(time.time() * 1000))
        p.metrics.add(name="bdSeq", datatype=DT["UInt64"], long_value=self.bdseq)
        return bytes(p.SerializeToString())

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        if sp.decode_rebirth(bytes(msg.payload)):
            self.rebirths_received += 1
            self._rebirth.set()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self.acked += 1  # paho's network thread is the only writer

    def _send(self, kind: str, device: str | None, ts: int, fill: Any) -> None:
        p = sp.new_payload(timestamp=ts, seq=self.seq)
        self.seq = (self.seq + 1) % sp.SEQ_MODULUS
        fill(p)
        self.client.publish(self.topic(kind, device), bytes(p.SerializeToString()), qos=1)
        self.published += 1

    def _births(self, ts: int) -> None:
        self.seq = 0

        def node(p: Any) -> None:
            p.metrics.add(name="bdSeq", datatype=DT["UInt64"], long_value=self.bdseq)
            p.metrics.add(name=sp.REBIRTH, alias=1000, datatype=DT["Boolean"], boolean_value=False)

        self._send("NBIRTH", None, ts, node)
        for device in self._fields:
            self._device_birth(device, ts)
        self.born = True

    def _device_birth(self, device: str, ts: int) -> None:
        def fill(p: Any) -> None:
            for f in self._fields[device]:
                name, data_type = metric_name(f)
                m = p.metrics.add(name=name, alias=self._aliases[(device, f)], datatype=DT[data_type])
                _value(m, data_type, self._last[device].get(f))

        self._send("DBIRTH", device, ts, fill)

    def play(self, end_ms: int, *, speed: float, stop: threading.Event | None = None) -> int:
        """Publish the simulation up to ``end_ms`` at ``speed`` × real time (or until ``stop``);
        returns the number of messages published (births included)."""
        wall0 = time.monotonic()
        for ts, topic, raw in self.sim.messages(end_ms):
            lag = (ts - self.sim.start_ms) / speed / 1000.0 - (time.monotonic() - wall0)
            if stop is not None:
                if stop.wait(max(lag, 0.0)):
                    break
            elif lag > 0:
                time.sleep(lag)
            if self._rebirth.is_set():  # the births again, with the values as they are now
                self._rebirth.clear()
                self._births(ts)
            device = topic.rsplit("/", 1)[1]
            fields = {k: v for k, v in orjson.loads(raw).items() if k != "timestamp"}
            if device not in self._fields:  # a device's first message: its birth
                names = [*fields, *(f for f in ALWAYS_BORN if f not in fields)]
                self._fields[device] = names
                for f in names:
                    self._aliases[(device, f)] = len(self._aliases) + 1
                self._last[device] = dict(fields)
                if not self.born:
                    self._births(ts)  # NBIRTH, and the DBIRTH of this first device
                else:
                    self._device_birth(device, ts)
                continue
            self._last[device].update(fields)

            def data(p: Any, device: str = device, fields: dict[str, Any] = fields) -> None:
                for f, v in fields.items():
                    m = p.metrics.add(alias=self._aliases[(device, f)])
                    _value(m, metric_name(f)[1], v)

            self._send("DDATA", device, ts, data)
        return self.published

    def flush(self, timeout_s: float = 60.0) -> bool:
        """Wait until the broker acknowledged every message published so far."""
        deadline = time.monotonic() + timeout_s
        while self.acked < self.published:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self, *, death: bool = False) -> None:
        """Disconnect: cleanly (the broker drops the will), after an ``NDEATH`` if ``death``."""
        if death:
            self.client.publish(self.topic("NDEATH"), self._death(), qos=1).wait_for_publish(10)
        self.client.disconnect()
        self.client.loop_stop()
