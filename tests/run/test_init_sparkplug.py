"""``plantstream init --mqtt`` on Sparkplug B: what it proposes from births (no broker needed).

The sampled messages are built here as an edge node would publish them (the connector's own
protobuf schema), handed to :func:`plantstream.cli.init.propose_mqtt` as
:func:`~plantstream.connectors.discover.sample_mqtt` returns them, and the written config is
loaded and fed back through the MQTT connector's conversion (:meth:`MqttConnector.convert`,
pure): the proposed tags must turn the births and data into the right Measurements.
"""

from __future__ import annotations

from typing import Any

from plantstream.cli.init import propose_mqtt, render
from plantstream.connectors import sparkplug as sp
from plantstream.connectors.discover import MqttSamples, TopicSample, read_sparkplug
from plantstream.connectors.mqtt import MqttConnector
from plantstream.schemas.config import load_config_text
from plantstream.schemas.measurement import Measurement

T0 = 1763791200000
DT = sp.DATATYPES


def payload(ts: int, seq: int, metrics: list[dict[str, Any]]) -> bytes:
    p = sp.new_payload(timestamp=ts, seq=seq)
    for m in metrics:
        p.metrics.add(**m)
    return bytes(p.SerializeToString())


def press_birth(ts: int, seq: int, state: int = 1) -> bytes:
    return payload(ts, seq, [
        {"name": "State", "alias": 1, "datatype": DT["Int32"], "int_value": state},
        {"name": "Counts/Good", "alias": 2, "datatype": DT["UInt64"], "long_value": 100},
        {"name": "Counts/Reject", "alias": 3, "datatype": DT["UInt64"], "long_value": 2},
        {"name": "Temperature", "alias": 4, "datatype": DT["Double"], "double_value": 40.0},
        {"name": "Part Number", "alias": 5, "datatype": DT["String"], "string_value": "P-17"},
        {"name": "Reject Reason", "alias": 6, "datatype": DT["String"], "is_null": True},
        {"name": "Tool ID", "alias": 7, "datatype": DT["Int32"], "int_value": 12},
        {"name": "Recipe", "alias": 8, "datatype": DT["Bytes"], "bytes_value": b"\x01"},
        {"name": "Device Control/Scan Rate", "alias": 9, "datatype": DT["Int32"], "int_value": 1000}])


def samples() -> MqttSamples:
    """line-1/gw-1: node metrics and two presses; line-1/gw-2: a device with a dotted id (exact keys)
    and a flag; line-1/gw-3: data only (its birth never came)."""
    msgs = [
        ("spBv1.0/line-1/NBIRTH/gw-1", payload(T0, 0, [
            {"name": "bdSeq", "datatype": DT["UInt64"], "long_value": 3},
            {"name": "Node Control/Rebirth", "alias": 100, "datatype": DT["Boolean"], "boolean_value": False},
            {"name": "Ambient Temp", "alias": 101, "datatype": DT["Float"], "float_value": 21.5},
            {"name": "Compressor Pressure", "alias": 102, "datatype": DT["Float"], "float_value": 6.5}])),
        ("spBv1.0/line-1/DBIRTH/gw-1/press-01", press_birth(T0, 1)),
        ("spBv1.0/line-1/DBIRTH/gw-1/press-02", press_birth(T0, 2, state=2)),
        ("spBv1.0/line-1/DDATA/gw-1/press-01", payload(T0 + 1000, 3, [
            {"alias": 1, "int_value": 3}, {"alias": 2, "long_value": 105},
            {"alias": 6, "string_value": "Burr"}])),
        ("spBv1.0/line-1/NBIRTH/gw-2", payload(T0, 0, [
            {"name": "bdSeq", "datatype": DT["UInt64"], "long_value": 0}])),
        ("spBv1.0/line-1/DBIRTH/gw-2/Oven.A", payload(T0, 1, [
            {"name": "Running", "alias": 1, "datatype": DT["Boolean"], "boolean_value": True},
            {"name": "Zone1/Temperature", "alias": 2, "datatype": DT["Float"], "float_value": 180.0},
            {"name": "Door Open", "alias": 3, "datatype": DT["Boolean"], "boolean_value": False}])),
        ("spBv1.0/line-1/DDATA/gw-3/filler", payload(T0 + 500, 7, [
            {"alias": 4, "double_value": 1.0}, {"name": "Good Count", "datatype": DT["UInt32"],
                                                "int_value": 9}])),
        ("spBv1.0/line-1/NCMD/gw-3", sp.rebirth_request(T0)),  # our own request: not data
    ]
    out = MqttSamples()
    out.rebirths_requested.append("line-1/gw-3")
    for topic, data in msgs:
        out.setdefault(topic, TopicSample(topic)).add(data, 50)
    return out


def test_read_sparkplug_names_metrics_from_births_and_resolves_aliases() -> None:
    things = {t.where: t for t in read_sparkplug(samples())}
    assert sorted(things) == ["spBv1.0/line-1/gw-1", "spBv1.0/line-1/gw-1/press-01",
                              "spBv1.0/line-1/gw-1/press-02", "spBv1.0/line-1/gw-2",
                              "spBv1.0/line-1/gw-2/Oven.A", "spBv1.0/line-1/gw-3/filler"]
    p1 = things["spBv1.0/line-1/gw-1/press-01"]
    assert p1.born and p1.metrics["State"].values == [1, 3] and p1.metrics["State"].data_type == "Int32"
    assert p1.metrics["Reject Reason"].values == ["Burr"]  # null in the birth, text by alias in data
    assert "Device Control/Scan Rate" not in p1.metrics
    assert list(things["spBv1.0/line-1/gw-1"].metrics) == ["Ambient Temp", "Compressor Pressure"]
    filler = things["spBv1.0/line-1/gw-3/filler"]
    assert not filler.born and filler.unknown_aliases == {4} and filler.metrics["Good Count"].values == [9]


def test_init_proposes_one_machine_per_device_and_node_with_patterns_and_exact_keys() -> None:
    s = samples()
    text = render(propose_mqtt(s, "broker", 1883, "#"))
    print(text)
    cfg = load_config_text(text)
    lines = {ln.id: [m.id for m in ln.machines] for ln in cfg.lines}
    assert lines == {"line-1": ["gw-1"], "gw-1": ["press-01", "press-02"], "gw-2": ["oven-a"],
                     "gw-3": ["filler"]}
    assert cfg.mqtt is not None and [(x.topic, x.format) for x in cfg.mqtt.subscriptions] == [
        ("spBv1.0/#", "sparkplug")]
    tags = {k: (t.machine, t.line, t.metric) for k, t in cfg.tags.items()}
    dev = "spBv1.0/line-1/{line}/{machine}#"
    assert tags[dev + "State"] == ("{machine}", "{line}", "machine_state")
    assert cfg.tags[dev + "State"].state_map()["3"] == "fault"
    assert tags[dev + "Counts/Good"][2] == "good_count"
    assert tags[dev + "Counts/Reject"][2] == "reject_count"
    assert tags[dev + "Temperature"][2] == "temperature_c"
    assert tags[dev + "Part Number"][2] == "part_number"
    assert tags[dev + "Reject Reason"][2] == "scrap_reason"
    node = "spBv1.0/line-1/{machine}#"
    assert tags[node + "Ambient Temp"] == ("{machine}", "line-1", "ambient_temperature_c")
    assert tags[node + "Compressor Pressure"][2] == "compressor_pressure_bar"
    # a device id that is not a machine id: exact keys, the machine named by its slug
    assert tags["spBv1.0/line-1/gw-2/Oven.A#Running"] == ("oven-a", "gw-2", "machine_state")
    assert cfg.tags["spBv1.0/line-1/gw-2/Oven.A#Running"].state_map() == {"1": "running", "0": "idle"}
    assert tags["spBv1.0/line-1/gw-2/Oven.A#Zone1/Temperature"][2] == "zone1_temperature_c"
    assert tags[dev + "Good Count"] == ("{machine}", "{line}", "good_count")  # named data, no birth
    # not placed: written commented out with the reason
    for key, why in [(dev + "Tool ID", "an identifier or setting"), (dev + "Recipe", "a Bytes metric"),
                     ("spBv1.0/line-1/gw-2/Oven.A#Door Open", "a Boolean metric"),
                     ("spBv1.0/line-1/gw-3/filler", "did not answer the rebirth request")]:
        assert key not in cfg.tags
        line = next(ln for ln in text.splitlines() if ln.lstrip().startswith(f'# "{key}"'))
        assert why in line, line
    assert "asked line-1/gw-3 for a rebirth" in text
    # machines no tag gives a state: warned in the file (a header line and a comment at each)
    assert "# WARNING: 2 machines without a machine_state seen (no OEE for them): gw-1, filler" in text
    warned = [ln.split("'")[1] for ln in text.splitlines() if ln.strip().startswith("# WARNING: no machine_state")]
    assert warned == ["gw-1", "filler"]
    assert not any("bdSeq" in k or "Control" in k for k in cfg.tags)


def test_the_proposed_tags_map_births_and_data_through_the_connector() -> None:
    s = samples()
    cfg = load_config_text(render(propose_mqtt(s, "broker", 1883, "spBv1.0/#")))
    conn = MqttConnector(cfg, {"bootstrap.servers": "unused:9092"}, clock=lambda: T0 + 5000)
    got: list[Measurement] = []
    dead: list[str] = []
    for topic in ["spBv1.0/line-1/NBIRTH/gw-1", "spBv1.0/line-1/DBIRTH/gw-1/press-01",
                  "spBv1.0/line-1/DDATA/gw-1/press-01", "spBv1.0/line-1/NBIRTH/gw-2",
                  "spBv1.0/line-1/DBIRTH/gw-2/Oven.A"]:
        ms, dls = conn.convert(topic, s[topic].payloads[-1])
        got += ms
        dead += [d.reason for d in dls]
    # only what init left unplaced (commented out) is refused: once per unknown tag, and the Bytes value
    assert len(dead) == 3, dead
    assert sum("'spBv1.0/line-1/gw-1/press-01#Tool ID': not in the tag dictionary" in r for r in dead) == 1
    assert sum("'spBv1.0/line-1/gw-2/Oven.A#Door Open': not in the tag dictionary" in r for r in dead) == 1
    assert sum("'Recipe': data type Bytes is not supported" in r for r in dead) == 1
    by = {(m.ts - T0, m.machine, m.metric, m.line): m.value for m in got}
    assert by[(0, "press-01", "machine_state", "gw-1")] == "running"
    assert by[(1000, "press-01", "machine_state", "gw-1")] == "fault"
    assert by[(1000, "press-01", "good_count", "gw-1")] == 105
    assert by[(1000, "press-01", "scrap_reason", "gw-1")] == "Burr"
    assert by[(0, "gw-1", "ambient_temperature_c", "line-1")] == 21.5
    assert by[(0, "oven-a", "machine_state", "gw-2")] == "running"
    assert by[(0, "oven-a", "zone1_temperature_c", "gw-2")] == 180.0
    assert not any(m.metric in ("tool_id", "recipe") for m in got)


def test_init_warns_about_machines_without_a_state_tag(tmp_path: Any, capsys: Any) -> None:
    """On stderr and in the file, naming what to map; the OPC UA and plain MQTT paths too."""
    from plantstream.cli.init import propose_opcua
    from plantstream.connectors.discover import UaVariable

    def var(folder: str, name: str, data_type: str, value: Any) -> UaVariable:
        return UaVariable([(2, "Line1"), (2, folder), (2, name)], f"ns=2;s={folder}.{name}",
                          f"{folder}.{name}", data_type, value=value)

    p = propose_opcua([var("Press01", "MachineState", "Int32", 1), var("Press01", "GoodCount", "Int64", 5),
                       var("Oven", "Temperature", "Double", 180.0), var("Oven", "RunBits", "ByteString", b"")],
                      "opc.tcp://plc:4840")
    assert list(p.stateless()) == ["oven"]
    assert "maybe one of: Oven.RunBits" in p.stateless()["oven"]
    text = render(p)
    assert text.count("# WARNING: no machine_state tag for machine 'oven'") == 1
    load_config_text(text)

    flat = MqttSamples()
    for topic, body in [("plant/l1/fryer", b'{"state": 1, "good_count": 3}'),
                        ("plant/l1/scale", b'{"weight_g": 60.1}')]:
        flat.setdefault(topic, TopicSample(topic)).add(body, 50)
    q = propose_mqtt(flat, "broker", 1883, "#")
    assert list(q.stateless()) == ["scale"]
    # the fryer's state pattern maps the scale too: the scale just sent none while init listened
    assert "no machine_state seen from machine 'scale' while init listened: plant/{line}/{machine}#state" \
        in q.stateless()["scale"]
    # a machine that sent other fields only, its state at another time: one warning, not one per
    # machine that happened to send no state in the window (flat payloads send what changed)
    two = MqttSamples()
    for topic, body in [("plant/l1/fryer", b'{"state": 1}'), ("plant/l1/fryer", b'{"good_count": 4}'),
                        ("plant/l1/mixer", b'{"good_count": 9}')]:
        two.setdefault(topic, TopicSample(topic)).add(body, 50)
    assert list(propose_mqtt(two, "broker", 1883, "#").stateless()) == ["mixer"]
    # a broker that refused MQTT 5 while init listened: the written source says 3.1.1
    two.mqtt5 = False
    assert '"protocol": "3.1.1"' in render(propose_mqtt(two, "broker", 1883, "#"))
    two.mqtt5 = True
    assert "protocol" not in render(propose_mqtt(two, "broker", 1883, "#"))


def test_init_command_warns_on_stderr_and_in_the_file(tmp_path: Any) -> None:
    """``plantstream init --mqtt`` itself: retained messages on a Mosquitto (published by a child
    process, so no MQTT client runs in this one), a scale that sends no state."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.mqtt.conftest import start_mosquitto
    from tests.run.test_run_mqtt import _env

    tmp = Path(tmp_path)
    mq = start_mosquitto(tmp / "mosquitto")
    try:
        publisher = (
            "import sys, paho.mqtt.publish as pub\n"
            "pub.multiple([('plant/l1/fryer', '{\"state\": 1, \"good_count\": 3}', 1, True),\n"
            "              ('plant/l1/scale', '{\"weight_g\": 60.1}', 1, True)],\n"
            "             hostname=sys.argv[1], port=int(sys.argv[2]))\n"
        )
        subprocess.run([sys.executable, "-c", publisher, mq.host, str(mq.port)], check=True, timeout=60)
        exe = str(Path(sys.executable).parent / "plantstream")
        res = subprocess.run([exe, "init", "--mqtt", f"{mq.host}:{mq.port}", "--listen", "2", "-o", "plant.yaml"],
                             cwd=tmp, env=_env(), capture_output=True, text=True, timeout=120, check=False)
    finally:
        mq.stop()
    assert res.returncode == 0, res.stderr
    err = " ".join(res.stderr.split())  # the console wraps long lines
    assert "warning: no machine_state seen from machine 'scale'" in err and "--listen" in err
    assert "'fryer'" not in err
    text = (tmp / "plant.yaml").read_text()
    assert "# WARNING: no machine_state seen from machine 'scale'" in text
    assert "protocol" not in text  # Mosquitto speaks MQTT 5
    load_config_text(text)
