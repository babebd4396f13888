"""The ``CALLREC_*`` settings that point callrec at the local stack's servers.

:func:`settings_env` reads the addresses and credentials of a ``KafkaServer``
(kafka.py) and a ``MinioServer`` (minio.py); the variables themselves are
documented in docs/configuration.md.
"""

from __future__ import annotations

from deploy.local.kafka import KafkaServer
from deploy.local.minio import S3_REGION, MinioServer


def settings_env(kafka: KafkaServer | None, minio: MinioServer | None) -> dict[str, str]:
    """The ``CALLREC_*`` environment variables pointing the app at these servers."""
    env: dict[str, str] = {}
    if kafka is not None:
        env["CALLREC_KAFKA_BOOTSTRAP"] = kafka.bootstrap
    if minio is not None:
        env.update(
            {
                "CALLREC_S3_ENDPOINT_URL": minio.endpoint,
                "CALLREC_S3_ACCESS_KEY_ID": minio.access_key,
                "CALLREC_S3_SECRET_ACCESS_KEY": minio.secret_key,
                "CALLREC_S3_REGION": S3_REGION,
            }
        )
    return env
