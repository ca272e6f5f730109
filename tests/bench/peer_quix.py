"""Peer benchmark: windowed OEE facts in idiomatic Quix Streams, events per second.

Runs in its own virtualenv (``make .venv-peer``), never in plantstream's: it imports no
plantstream module. ``tests/bench/peer.py`` starts it as a subprocess::

    .venv-peer/bin/python tests/bench/peer_quix.py --bootstrap HOST:PORT --topic TOPIC --messages N

The input topic holds plantstream Measurement JSON objects (``{"ts": epoch_ms, "machine": ...,
"metric": ..., "value": ..., "quality": ...}``) keyed by machine id. The pipeline:

1. ``filter``: samples of ``bad`` quality are dropped, as plantstream does for KPIs.
2. ``apply(stateful=True)``: per machine (the message key) and across windows, the previous
   sample's time and machine state and the last value of each cumulative counter, kept in the
   Quix state store; each sample becomes a fact delta: the milliseconds since the previous
   sample, credited to the state the machine was in (not split at window boundaries: an
   approximation at most one sample interval wide), and the good/reject count increments
   (delta from the previous value; a counter reset takes the new value; the first value of a
   counter is its baseline).
3. ``tumbling_window(--window-s, grace 0).reduce(...).final()`` in event time (``ts`` through
   the topic's timestamp extractor): per machine and window, milliseconds per state, good and
   reject counts and the number of samples, emitted once the window has closed. Windows close
   per key (Quix's default ``closing_strategy="key"``), so each machine's last window stays
   open at the end of the input and is not counted.
4. Sink: the closed windows are counted in memory (no result topic).

The clock starts when the first input message has been processed, i.e. after the consumer
group has joined and the partitions are assigned, and stops when ``--messages`` input messages
have been processed; the rate is (N - 1) / seconds. Quix's defaults are kept: at-least-once,
a commit every 5 s, RocksDB state with changelog topics on the broker. Prints one JSON line::

    {"peer_events_per_s": ..., "messages": N, "seconds": ..., "windows_emitted": ..., "quixstreams": "3.x"}

and exits 0; exits 1 (the JSON then has an ``error``) when fewer than N messages arrived before
the input stayed idle for ``--idle-timeout-s``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from typing import Any, cast, get_args

import quixstreams
from quixstreams import Application, State
from quixstreams.logging import LogLevel
from quixstreams.models.topics import Topic, TopicAdmin, TopicManager

COUNTERS = ("good_count", "reject_count")
TRACK_KEY = "oee"
KAFKA_TOPIC_DEFAULTS = {"retention.ms": "604800000", "retention.bytes": "-1"}


class KafkaDefaultsTopicManager(TopicManager):
    """Fills in Kafka's defaults for the retention configs a broker does not report.

    Quix derives its changelog topics' retention from the input topic's ``retention.ms`` and
    fails with ``KeyError: 'retention.ms'`` without it; Kafka's DescribeConfigs reports every
    default, Tansu only the configs set explicitly (quix-streams issue #1022 fixed the same for
    ``retention.bytes`` only).
    """

    def _fetch_topic(self, topic: Topic) -> Topic:
        fetched = super()._fetch_topic(topic)
        config = fetched.broker_config
        fetched.broker_config = dataclasses.replace(
            config, extra_config={**KAFKA_TOPIC_DEFAULTS, **config.extra_config})
        return fetched


def extract_ts(value: Any, headers: Any, timestamp: int, timestamp_type: Any) -> int:
    """Event time: the Measurement's ``ts`` (epoch ms), not the Kafka record timestamp."""
    return int(value["ts"])


def usable(value: dict[str, Any]) -> bool:
    return value.get("quality", "good") != "bad"


def to_fact(value: dict[str, Any], state: State) -> dict[str, Any]:
    """One sample → its OEE fact delta, from the machine's state kept across windows."""
    ts = int(value["ts"])
    metric = value["metric"]
    track: dict[str, Any] = state.get(TRACK_KEY) or {"ts": None, "state": None, "counters": {}}
    last_ts, last_state = track["ts"], track["state"]
    elapsed = ts - last_ts if last_ts is not None and last_state is not None and ts > last_ts else 0
    good = reject = 0
    if metric == "machine_state":
        track["state"] = str(value["value"])
    elif metric in COUNTERS:
        current = int(value["value"])
        previous = track["counters"].get(metric)
        delta = 0 if previous is None else (current - previous if current >= previous else current)
        track["counters"][metric] = current
        if metric == "good_count":
            good = delta
        else:
            reject = delta
    if last_ts is None or ts > last_ts:
        track["ts"] = ts
    state.set(TRACK_KEY, track)
    return {"state": last_state, "elapsed_ms": elapsed, "good": good, "reject": reject}


def reduce_facts(acc: dict[str, Any], fact: dict[str, Any]) -> dict[str, Any]:
    acc["samples"] += 1
    if fact["elapsed_ms"]:
        state_ms = acc["state_ms"]
        state_ms[fact["state"]] = state_ms.get(fact["state"], 0) + fact["elapsed_ms"]
    acc["good"] += fact["good"]
    acc["reject"] += fact["reject"]
    return acc


def init_facts(fact: dict[str, Any]) -> dict[str, Any]:
    return reduce_facts({"samples": 0, "state_ms": {}, "good": 0, "reject": 0}, fact)


def run(bootstrap: str, topic: str, messages: int, window_s: float, idle_timeout_s: float,
        loglevel: LogLevel) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="peer-quix-state-", ignore_cleanup_errors=True) as state_dir:
        return run_in(state_dir, bootstrap, topic, messages, window_s, idle_timeout_s, loglevel)


def run_in(state_dir: str, bootstrap: str, topic: str, messages: int, window_s: float,
           idle_timeout_s: float, loglevel: LogLevel) -> dict[str, Any]:
    """Build the application with its RocksDB state in ``state_dir``, run it, return the result."""
    processed = 0
    windows = 0
    started: float | None = None
    stopped: float | None = None

    app: Application

    def on_processed(topic_name: str, partition: int, offset: int) -> None:
        nonlocal processed, started, stopped
        processed += 1
        if started is None:
            started = time.perf_counter()
        if processed == messages:
            stopped = time.perf_counter()
            app.stop()

    def on_window(window: dict[str, Any]) -> None:
        nonlocal windows
        windows += 1

    group = f"peer-quix-{uuid.uuid4().hex[:12]}"
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        topic_manager=KafkaDefaultsTopicManager(topic_admin=TopicAdmin(broker_address=bootstrap),
                                                consumer_group=group),
        auto_offset_reset="earliest",
        state_dir=state_dir,
        on_message_processed=on_processed,
        loglevel=loglevel,
    )
    measurements = app.topic(topic, value_deserializer="json", timestamp_extractor=extract_ts)
    sdf = app.dataframe(measurements)
    sdf = sdf.filter(usable)
    sdf = sdf.apply(to_fact, stateful=True)
    sdf = (
        sdf.tumbling_window(duration_ms=timedelta(seconds=window_s))
        .reduce(reducer=reduce_facts, initializer=init_facts)
        .final()
    )
    sdf.update(on_window)
    app.run(timeout=idle_timeout_s)

    if started is None or stopped is None:
        return {"error": f"processed {processed} of {messages} messages before the input was idle "
                         f"for {idle_timeout_s} s",
                "messages": processed, "windows_emitted": windows, "quixstreams": quixstreams.__version__}
    seconds = stopped - started
    return {
        "peer_events_per_s": round((messages - 1) / seconds, 1),
        "messages": messages,
        "seconds": round(seconds, 3),
        "windows_emitted": windows,
        "quixstreams": quixstreams.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers, HOST:PORT")
    parser.add_argument("--topic", required=True, help="input topic of Measurement JSON, key = machine")
    parser.add_argument("--messages", type=int, required=True, help="stop after N input messages")
    parser.add_argument("--window-s", type=float, default=60.0, help="tumbling window length (s)")
    parser.add_argument("--idle-timeout-s", type=float, default=60.0,
                        help="give up when no message arrives for this long (after the group join)")
    parser.add_argument("--loglevel", default="WARNING", choices=get_args(LogLevel),
                        help="Quix Streams log level")
    args = parser.parse_args(argv)
    if args.messages < 2:
        parser.error("--messages must be >= 2")
    result = run(args.bootstrap, args.topic, args.messages, args.window_s, args.idle_timeout_s,
                 cast(LogLevel, args.loglevel))
    print(json.dumps(result), flush=True)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
