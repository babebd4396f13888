"""Kafka topics a benchmark makes for itself, and removes."""

from __future__ import annotations


async def create_topics(bootstrap: str, topics: dict[str, int],
                        configs: dict[str, str] | None = None) -> None:
    """Create each topic with its partition count (replication 1) and ``configs``."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([
            NewTopic(name, num_partitions=n, replication_factor=1, topic_configs=configs)
            for name, n in topics.items()
        ])
    finally:
        await admin.close()


async def delete_topic(bootstrap: str, name: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([name])
    finally:
        await admin.close()
