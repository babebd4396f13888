"""Coverage-guided fuzzing of the byte parsers with atheris (optional; not in the suite).

::

    .venv/bin/pip install atheris          # a wheel for CPython 3.11 on x86-64 Linux
    .venv/bin/python -m bench.fuzz_atheris [--seconds 60] [--target wavix|envelope|session]

Targets (the same properties as tests/unit/test_fuzz.py, which runs without atheris):

- ``wavix``: ``schemas.wavix.parse`` raises only ``ProtocolError``; what parses
  round-trips through ``encode``.
- ``envelope``: ``schemas.envelope.decode`` raises only ``EnvelopeError``; what
  decodes round-trips.
- ``session``: the input is split into frames fed to one ``StreamSession``;
  only ``ProtocolError``/``SkippedMessage`` may escape, and a returned record
  belongs to the started stream.

Each target runs in its own process (libFuzzer exits on the first crash),
seeded with tests/data/fuzz/ and valid messages; a crashing input is written to
``--artifacts`` (default ``fuzz-artifacts/``): add it to the corpus with the
fix. The Python code of schemas/ and ingest/ is instrumented; msgspec is C and
is fuzzed as a black box.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "data" / "fuzz"
TARGETS = ("wavix", "envelope", "session")


def _seeds(target: str, into: Path) -> None:
    """Write the seed inputs of ``target`` into ``into``."""
    from schemas import envelope, wavix

    frame = bytes(range(256)) * 3 + bytes(192)
    valid = [
        wavix.encode(wavix.Start(call_id="c1", stream_id="s1", channel="both",
                                 sequence_number=1)),
        wavix.encode(wavix.Media(call_id="c1", stream_id="s1", sequence_number=2,
                                 media=wavix.MediaBody(payload=frame, chunk=1, timestamp=0,
                                                       track="inbound")),
                     numbers_as_strings=True),
        wavix.encode(wavix.Stop(call_id="c1", stream_id="s1")),
    ]
    index = json.loads((CORPUS / "index.json").read_text())
    if target == "envelope":
        seeds = [(CORPUS / "envelope" / e["file"]).read_bytes() for e in index["envelope"]]
        seeds += [(REPO / "tests" / "data" / "envelope" / p.name).read_bytes()
                  for p in (REPO / "tests" / "data" / "envelope").glob("*.bin")]
        seeds.append(envelope.encode(envelope.MarkReceived(call_id="c", stream_id="s",
                                                           name="n", received_ns=1)))
    elif target == "wavix":
        seeds = valid + [(CORPUS / "wavix" / e["file"]).read_bytes() for e in index["wavix"]]
    else:
        seeds = [b"\n".join(valid)]
        seeds += [(CORPUS / "session" / e["file"]).read_bytes() for e in index["session"]]
    for i, seed in enumerate(seeds):
        (into / f"seed-{i:03d}").write_bytes(seed)


def _target(name: str) -> Callable[[bytes], None]:
    import atheris

    with atheris.instrument_imports(include=["schemas", "ingest"]):
        from ingest.errors import SkippedMessage
        from ingest.session import StreamSession
        from schemas import envelope, wavix
        from schemas.codecs import L16_24K
        from schemas.errors import EnvelopeError, ProtocolError

    def fuzz_wavix(data: bytes) -> None:
        try:
            event = wavix.parse(data)
        except ProtocolError:
            return
        assert wavix.parse(wavix.encode(event)) == event
        assert wavix.parse(wavix.encode(event, numbers_as_strings=True)) == event

    def fuzz_envelope(data: bytes) -> None:
        try:
            record = envelope.decode(data)
        except EnvelopeError:
            return
        assert envelope.decode(envelope.encode(record)) == record

    def fuzz_session(data: bytes) -> None:
        session = StreamSession(L16_24K, pod="p", connection_id="c")
        for frame in data.split(b"\n"):
            try:
                record = session.receive(frame)
            except (ProtocolError, SkippedMessage):
                continue
            if record is not None:
                assert (record.call_id, record.stream_id) == (session.call_id,
                                                              session.stream_id)

    return {"wavix": fuzz_wavix, "envelope": fuzz_envelope, "session": fuzz_session}[name]


def _child(name: str, libfuzzer_args: list[str]) -> None:
    import atheris

    test = _target(name)
    atheris.Setup([sys.argv[0], *libfuzzer_args], test)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        _child(argv[1], argv[2:])
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.fuzz_atheris", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    p.add_argument("--target", choices=TARGETS, action="append",
                   help="target to run (repeatable; default all)")
    p.add_argument("--artifacts", default="fuzz-artifacts", help="where crashing inputs go")
    args = p.parse_args(argv)
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed: .venv/bin/pip install atheris", file=sys.stderr)
        return 2
    artifacts = Path(args.artifacts).resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in args.target or TARGETS:
        with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as work:
            corpus = Path(work) / "corpus"
            corpus.mkdir()
            _seeds(name, corpus)
            cmd = [sys.executable, "-m", "bench.fuzz_atheris", "_child", name,
                   f"-max_total_time={args.seconds}", f"-artifact_prefix={artifacts}/{name}-",
                   "-max_len=8192", "-rss_limit_mb=2048", "-print_final_stats=1", str(corpus)]
            print(f"== {name}: {args.seconds} s", flush=True)
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                                  timeout=args.seconds + 120, check=False)
            stats = [line for line in proc.stderr.splitlines()
                     if line.startswith(("stat::", "#", "INFO: Seed", "==", "Done"))
                     or "Error" in line or "Uncaught" in line]
            print("\n".join(stats[-12:]))
            if proc.returncode != 0:
                failed.append(name)
                print(proc.stderr[-3000:])
    print("crashes in: " + ", ".join(failed) if failed else "no crash found")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
