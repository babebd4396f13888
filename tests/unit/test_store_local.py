"""LocalStore, the archive of ``callrec up``: what is on disk after a write, a failed
write and a write cut short by a crash."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from infra.store import ObjectExistsError, ObjectLockedError, ObjectNotFoundError, StoreError
from infra.store.local import LocalStore


def test_objects_come_back_as_written_and_replace_the_old_ones(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "archive")
    store.check()
    first = store.put_bytes("recordings/r1/manifest.json", b'{"v": 1}', "application/json")
    assert first.sha256 == hashlib.sha256(b'{"v": 1}').hexdigest() and first.size == 8
    source = tmp_path / "audio.wav"
    source.write_bytes(bytes(range(256)) * 4096)
    stored = store.put_file("recordings/r1/audio.wav", source, "s" * 64, "audio/wav")
    assert stored.size == 256 * 4096
    store.put_bytes("recordings/r1/manifest.json", b'{"v": 2}', "application/json")
    assert store.get_bytes("recordings/r1/manifest.json") == b'{"v": 2}'
    assert store.get_bytes("recordings/r1/audio.wav") == source.read_bytes()
    assert store.list_keys("recordings/") == ["recordings/r1/audio.wav",
                                              "recordings/r1/manifest.json"]
    assert sorted(os.listdir(tmp_path / "archive" / "recordings" / "r1")) == [
        "audio.wav", "manifest.json"], "no temp file is left behind"


def test_a_key_outside_the_archive_is_refused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "archive")
    with pytest.raises(StoreError, match="escapes"):
        store.put_bytes("../outside", b"x", "text/plain")
    assert not (tmp_path / "outside").exists()


def test_a_failed_write_never_replaces_the_object(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "archive")
    store.put_bytes("recordings/r1/manifest.json", b"old manifest", "application/json")

    def disk_error(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", disk_error)  # the bytes never reached the disk
    with pytest.raises(OSError, match="Input/output"):
        store.put_bytes("recordings/r1/manifest.json", b"new manifest", "application/json")
    monkeypatch.undo()
    assert store.get_bytes("recordings/r1/manifest.json") == b"old manifest"
    assert os.listdir(tmp_path / "archive" / "recordings" / "r1") == ["manifest.json"]


_WRITER = """
import sys
from pathlib import Path
from infra.store.local import LocalStore
LocalStore(Path(sys.argv[1])).put_file("recordings/r1/audio.wav", Path(sys.argv[2]),
                                       "0" * 64, "audio/wav")
"""


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_a_write_cut_short_by_kill_9_leaves_the_old_object_and_no_key(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    store = LocalStore(archive)
    store.put_bytes("recordings/r1/audio.wav", b"the old recording", "audio/wav")
    fifo = tmp_path / "source"
    os.mkfifo(fifo)
    # The writer copies from a pipe, so it is stopped exactly where the test wants it:
    # half of the new object written, the rest never to come.
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(archive), str(fifo)],
                              cwd=Path(__file__).parents[2])
    try:
        half = b"\x01" * 1024 * 1024  # a whole number of the store's 1 MiB copy blocks
        with fifo.open("wb") as pipe:
            pipe.write(half)
            pipe.flush()
            folder = archive / "recordings" / "r1"

            def temp_files() -> list[Path]:
                return [p for p in folder.iterdir() if p.name.startswith(".")]

            wait_for(lambda: any(p.stat().st_size == len(half) for p in temp_files()), 30,
                     "the writer to write the first half")
            writer.send_signal(signal.SIGKILL)
            writer.wait(30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert store.get_bytes("recordings/r1/audio.wav") == b"the old recording"
    assert store.list_keys("") == ["recordings/r1/audio.wav"], "the half object is no key"
    [temp] = temp_files()
    assert temp.read_bytes() == half
    store.put_bytes("recordings/r1/audio.wav", b"the new recording", "audio/wav")
    assert store.get_bytes("recordings/r1/audio.wav") == b"the new recording"


def test_an_object_and_its_new_directories_are_flushed_before_put_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What survives a power loss depends on the order of fsync and rename, which a test
    cannot cut the power on: so the order itself is checked, on a real file system."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        events.append(("rename", f"{Path(src).name} -> {Path(dst).name}"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    tmp_path = tmp_path.resolve()
    store = LocalStore(tmp_path / "archive")
    store.put_bytes("recordings/r1/manifest.json", b"{}", "application/json")
    monkeypatch.undo()
    folder = tmp_path / "archive" / "recordings" / "r1"
    [(_, temp)] = [e for e in events if e[0] == "fsync" and e[1].startswith(str(folder) + "/")]
    assert events == [
        ("fsync", str(tmp_path)),  # archive/ was created in it
        ("fsync", str(tmp_path / "archive")),  # recordings/
        ("fsync", str(tmp_path / "archive" / "recordings")),  # r1/
        ("fsync", temp),  # the bytes, before they get the key's name
        ("rename", f"{Path(temp).name} -> manifest.json"),
        ("fsync", str(folder)),  # the name
    ]
    assert store.get_bytes("recordings/r1/manifest.json") == b"{}"


def test_ranges_blocks_sizes_and_missing_keys(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    data = bytes(range(256)) * 9000
    store.put_bytes("recordings/r-0/audio.wav", data, "audio/wav")

    assert store.size("recordings/r-0/audio.wav") == len(data)
    assert store.get_range("recordings/r-0/audio.wav", 300, 310) == data[300:310]
    assert store.get_range("recordings/r-0/audio.wav", len(data) - 2, len(data) + 9) == data[-2:]
    blocks = list(store.iter_bytes("recordings/r-0/audio.wav", block=100_000))
    assert b"".join(blocks) == data and max(map(len, blocks)) == 100_000
    with pytest.raises(ObjectNotFoundError):
        store.size("recordings/nope-0/audio.wav")
    with pytest.raises(StoreError):
        store.get_range("recordings/r-0/audio.wav", 10, 5)


def test_a_hold_marker_refuses_deletes_and_is_never_a_key(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("recordings/h-0/audio.wav", b"audio", "audio/wav")
    store.set_legal_hold("recordings/h-0/audio.wav", True)

    assert store.lock_state("recordings/h-0/audio.wav").legal_hold
    assert store.list_keys("recordings/") == ["recordings/h-0/audio.wav"]
    with pytest.raises(ObjectLockedError):
        store.delete("recordings/h-0/audio.wav")
    assert store.get_bytes("recordings/h-0/audio.wav") == b"audio"

    store.set_legal_hold("recordings/h-0/audio.wav", False)
    store.delete("recordings/h-0/audio.wav")
    assert not store.exists("recordings/h-0/audio.wav")
    store.delete("recordings/h-0/audio.wav")  # already gone: no error


def test_a_create_only_write_never_replaces_an_object(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_new("audit/000000000000.json", b"first", "application/json")
    with pytest.raises(ObjectExistsError):
        store.put_new("audit/000000000000.json", b"second", "application/json")
    assert store.get_bytes("audit/000000000000.json") == b"first"
    assert store.list_keys("audit/") == ["audit/000000000000.json"], "no temp file left"
