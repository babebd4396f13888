"""The console's calls index over MinIO (console/index.py): a load in a child process that
opens the bucket from the console's settings (keys passed on its stdin), the fetching
reader, and an index kept across a restart that then reads only the new files."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from console.index import CallIndex
from deploy.local import stack
from tests.consoleutil import archive_analyzed, console_settings, tone, users_file
from tests.integration.recorderutil import new_bucket, s3_store


def add_call(store: Any, call_id: str, work: Path) -> None:
    archive_analyzed(
        store,
        call_id,
        {"inbound": tone(1000), "outbound": tone(1000, freq=330)},
        [(0, 800, f"{call_id} over s3")],
        work,
    )


def test_an_s3_index_is_built_in_a_child_and_kept_across_a_restart(
    minio: stack.MinioServer, tmp_path: Path, caplog: Any
) -> None:
    bucket = new_bucket(minio)
    store = s3_store(minio, bucket)
    for i in range(3):
        add_call(store, f"s3-{i}", tmp_path)
    settings = console_settings(
        f"s3://{bucket}",
        users_file(tmp_path / "users"),
        s3_endpoint_url=minio.endpoint,
        s3_access_key_id=minio.access_key,
        s3_secret_access_key=minio.secret_key,
        console_index_dir=str(tmp_path / "index"),
    )
    index = CallIndex(
        store, directory=settings.console_index_dir, archive=settings, readers=4, child_from=1
    )
    try:
        with caplog.at_level(logging.INFO, logger="console.indexbuild"):
            assert index.load() == 9  # calls, segments, metrics of each
        assert re.search(
            r"a build process read 9 files \(\d+ rows, 0 skipped, 0 left\)", caplog.text
        )
        assert index.count() == 3
    finally:
        index.close()

    add_call(store, "s3-late", tmp_path)
    again = CallIndex.for_console(store, settings)
    try:
        assert again.loaded and again.count() == 3
        assert again.load() == 3, "only the new recording's files"
        rows = again.cursor().execute(
            "SELECT text FROM segments_idx WHERE recording_id = 's3-late-0'"
        )
        assert [t for (t,) in rows.fetchall()] == ["s3-late over s3"] * 2
    finally:
        again.close()
