"""Every service built from its settings, on Kafka or on the local bus: the one wiring place.

Services take plain values and the bus and store interfaces (``infra.bus``,
``infra.store``); this module is the only one that turns settings into those,
so ``callrec <service>``, ``callrec up``, the tests and the benchmarks build a
service the same way. ``bus=None`` means Kafka; a :class:`~infra.bus.local.LocalBus`
puts the service on the local log of ``callrec up``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from console.app import Console
from console.settings import ConsoleSettings
from control.api import ControlApi
from control.controller import Controller
from control.forwarder import Forwarder
from control.rules import RuleSet, load_rules, record_all, record_none
from control.settings import ControlSettings
from control.state import kafka_loader, local_loader
from control.wavixapi import WavixClient, WavixConfig
from infra.bus import Consumer, Producer, Publisher
from infra.bus.kafka import KafkaPublisher, kafka_consumer, kafka_producer
from infra.bus.local import LocalBus, LocalConsumer, LocalProducer, LocalPublisher
from infra.store import ObjectStore
from ingest import metrics as ingest_metrics
from ingest.server import IngestServer
from ingest.settings import IngestSettings
from workers.analyzer.service import AnalyzerService
from workers.analyzer.settings import AnalyzerSettings
from workers.analyzer.transcribe import Transcriber
from workers.recorder.service import RecorderService
from workers.recorder.settings import RecorderSettings

RECORDER_MAX_PARTITION_FETCH_BYTES = 4 * 1024 * 1024
"""Largest fetch per partition: a few seconds of a busy partition's audio."""


def publisher(settings: IngestSettings, bus: LocalBus | None = None) -> Publisher:
    """Where ingest hands its records: Kafka's ``acks=all`` producer, or the local log."""
    if bus is not None:
        return LocalPublisher(bus, settings.kafka_media_topic)
    return KafkaPublisher(
        settings.kafka_client_options(),
        settings.kafka_media_topic,
        max_inflight_bytes=settings.ingest_max_inflight_bytes,
        produce_timeout_s=settings.ingest_produce_timeout_s,
        linger_ms=settings.ingest_linger_ms,
        metrics=ingest_metrics.PUBLISH,
    )


def ingest_server(settings: IngestSettings, bus: LocalBus | None = None) -> IngestServer:
    """``callrec ingest``: the WebSocket server and its publisher."""
    return IngestServer(settings, publisher(settings, bus))


def recorder_service(
    settings: RecorderSettings,
    store: ObjectStore,
    bus: LocalBus | None = None,
    *,
    spill_dir: Path | None = None,
) -> RecorderService:
    """``callrec recorder``: a member of the recorder group. On the local bus, recordings
    left open by a previous process are ended once the replay reaches the log end."""
    consumer: Consumer
    producer: Producer
    if bus is None:
        options = settings.kafka_client_options()
        consumer = kafka_consumer(
            options, settings.recorder_group_id,
            session_timeout_ms=settings.recorder_session_timeout_ms,
            max_partition_fetch_bytes=RECORDER_MAX_PARTITION_FETCH_BYTES,
            fetch_min_bytes=settings.recorder_fetch_min_bytes,
            fetch_max_wait_ms=settings.recorder_fetch_max_wait_ms,
        )
        producer = kafka_producer(options)
    else:
        consumer = LocalConsumer(bus, settings.recorder_group_id)
        producer = LocalProducer(bus)
    return RecorderService(
        consumer=consumer,
        producer=producer,
        store=store,
        media_topic=settings.kafka_media_topic,
        recordings_topic=settings.kafka_recordings_topic,
        spill_dir=spill_dir or Path(settings.recorder_spill_dir),
        make_assembler=RecorderService.assembler_factory(settings.recorder_reorder_window_ms),
        grace_ms=settings.recorder_grace_ms,
        idle_timeout_s=settings.recorder_idle_timeout_s,
        commit_interval_s=settings.recorder_commit_interval_s,
        max_parallel_archives=settings.recorder_max_parallel_archives,
        shutdown_grace_s=settings.recorder_shutdown_grace_s,
        cut_open_on_restart=bus is not None,
    )


def analyzer_service(
    settings: AnalyzerSettings,
    store: ObjectStore,
    transcriber: Transcriber,
    bus: LocalBus | None = None,
) -> AnalyzerService:
    """``callrec analyzer``: a member of the analyzer group. Load the transcriber first
    (slow): ``WhisperTranscriber(settings.transcriber_config())``."""
    consumer: Consumer
    if bus is None:
        consumer = kafka_consumer(
            settings.kafka_client_options(), settings.analyzer_group_id,
            session_timeout_ms=settings.analyzer_session_timeout_ms,
        )
    else:
        consumer = LocalConsumer(bus, settings.analyzer_group_id)
    return AnalyzerService(
        consumer=consumer,
        store=store,
        transcriber=transcriber,
        config=settings.analysis_config(),
        recordings_topic=settings.kafka_recordings_topic,
        max_attempts=settings.analyzer_max_attempts,
        shutdown_grace_s=settings.analyzer_shutdown_grace_s,
    )


def control_api(settings: ControlSettings, bus: LocalBus | None = None) -> ControlApi:
    """The control plane's HTTP service (webhook, pause/resume API, probes)."""
    producer: Producer = (LocalProducer(bus) if bus is not None
                          else kafka_producer(settings.kafka_client_options()))
    forwarder = None
    if settings.control_forward_url:
        forwarder = Forwarder(settings.control_forward_url,
                              attempts=settings.control_forward_attempts,
                              queue=settings.control_forward_queue)

    def secret(value: SecretStr | None) -> str | None:
        return value.get_secret_value() if value is not None else None

    return ControlApi(
        producer=producer,
        calls_topic=settings.kafka_calls_topic,
        webhook_secret=secret(settings.control_webhook_secret),
        api_token=secret(settings.control_api_token),
        max_body_bytes=settings.control_max_body_bytes,
        forwarder=forwarder,
    )


def wavix_client(settings: ControlSettings) -> WavixClient:
    key = settings.wavix_api_key
    return WavixClient(WavixConfig(
        base_url=settings.wavix_api_url,
        api_key=key.get_secret_value() if key is not None else "",
        auth_style=settings.wavix_auth_style,
        path_style=settings.wavix_path_style,
        timeout_s=settings.wavix_timeout_s,
        max_attempts=settings.wavix_max_attempts,
        backoff_s=settings.wavix_backoff_s,
    ))


def recording_rules(settings: ControlSettings) -> RuleSet:
    channel = settings.control_stream_channel
    if settings.control_rules_file:
        return load_rules(settings.control_rules_file, channel)
    return record_all(channel) if settings.control_record_all else record_none(channel)


def controller(settings: ControlSettings, store: ObjectStore,
               bus: LocalBus | None = None, *, rules: RuleSet | None = None) -> Controller:
    """The controller: a member of the controller group over ``callrec.calls``."""
    consumer: Consumer
    producer: Producer
    if bus is None:
        options = settings.kafka_client_options()
        consumer = kafka_consumer(options, settings.control_group_id,
                                  session_timeout_ms=settings.control_session_timeout_ms)
        producer = kafka_producer(options)
        loader = kafka_loader(options, settings.kafka_control_topic)
    else:
        consumer = LocalConsumer(bus, settings.control_group_id)
        producer = LocalProducer(bus)
        loader = local_loader(bus, settings.kafka_control_topic)
    return Controller(
        consumer=consumer,
        producer=producer,
        load_states=loader,
        store=store,
        wavix=wavix_client(settings),
        rules=rules or recording_rules(settings),
        calls_topic=settings.kafka_calls_topic,
        control_topic=settings.kafka_control_topic,
        media_topic=settings.kafka_media_topic,
        stream_url=settings.control_stream_url,
        token_keys=settings.token_keys(),
        stream_type=settings.control_stream_type,
        confirm_events=settings.control_confirm_events,
    )


def console(settings: ConsoleSettings, store: ObjectStore) -> Console:
    """``callrec console``: the review web app over the archive (``.app()`` is the ASGI app).
    Its store needs read access to recordings/ and tables/ and write access to audit/."""
    return Console(settings, store)
