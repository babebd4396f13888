"""``callrec verify|hold|retention|erase|export|audit``: the compliance commands.

Thin wrappers over the ``compliance`` library (the console calls the same
functions). Settings: :class:`compliance.settings.ComplianceSettings` (the
archive variables, the retention policy, the export key); docs/compliance.md
says what each command guarantees. Exit status: 0 when all is well, 1 when
something was found or refused (problems, a hold, a retention), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from compliance.settings import ComplianceSettings
    from compliance.verify import VerifyReport
    from infra.store import ObjectStore


def _settings(args: argparse.Namespace) -> ComplianceSettings:
    from callrec.logs import configure_logging
    from compliance.settings import ComplianceSettings

    overrides = {"archive_uri": args.archive} if getattr(args, "archive", None) else {}
    settings = ComplianceSettings(**overrides)
    configure_logging(settings.log_level)
    return settings


def _store(settings: ComplianceSettings) -> ObjectStore:
    store = settings.open_store()
    store.check()
    return store


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _reported(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Print a compliance, store or command error as one line and exit 1."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from callrec.errors import CommandError
        from compliance.errors import ComplianceError
        from infra.errors import InfraError

        try:
            return handler(args)
        except (ComplianceError, InfraError, CommandError) as exc:
            _err(f"{args.command}: {exc}")
            return 1

    return run


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def _err(message: str) -> None:
    print(f"callrec: {message}", file=sys.stderr)


def _selected(
    settings: ComplianceSettings, store: ObjectStore, call_ids: Sequence[str], sql: str | None
) -> list[str]:
    """Recording ids from ``--call-id`` (every part) and/or the rows ``--sql`` selects."""
    from compliance.recordings import resolve_calls

    ids = resolve_calls(store, call_ids)
    if sql:
        from callrec.query import connect, run

        con = connect(settings.archive_uri, settings)
        try:
            columns, rows = run(con, sql)
        finally:
            con.close()
        if "recording_id" not in columns:
            raise ValueError(
                "--sql must select a recording_id column, e.g. "
                "SELECT recording_id FROM calls WHERE ..."
            )
        index = columns.index("recording_id")
        ids += [str(row[index]) for row in rows if row[index] is not None]
    return list(dict.fromkeys(ids))


# -- verify ----------------------------------------------------------------------------------


def _verify(args: argparse.Namespace) -> int:
    from compliance.audit import AuditLog
    from compliance.recordings import cli_actor, resolve_calls
    from compliance.verify import record_status, verify_archive

    settings = _settings(args)
    store = _store(settings)
    actor, address = cli_actor()
    rec_ids = resolve_calls(store, args.call_id) if args.call_id else None
    dates = None
    if args.date_from or args.date_to:
        dates = (args.date_from or dt.date(1970, 1, 1), args.date_to or dt.date.today())
    scope = (
        f"calls {','.join(args.call_id)}"
        if args.call_id
        else f"{dates[0]}..{dates[1]}"
        if dates
        else "all"
    )
    report = verify_archive(
        store,
        policy=settings.lock_policy(),
        recording_ids=rec_ids,
        dates=dates,
        workers=args.workers or settings.verify_workers,
        progress=not args.no_progress and not args.json,
        scope=scope,
    )
    if args.record:
        record_status(store, report)
    AuditLog(store).append(
        actor=actor,
        address=address,
        action="verify",
        target=scope,
        outcome="ok" if report.ok else "error",
        detail={"problems": str(len(report.problems)), "recordings": str(report.recordings)},
    )
    if args.json:
        _print_json(report.as_dict())
    else:
        _print_verify(report)
    return 0 if report.ok else 1


def _print_verify(report: VerifyReport) -> None:
    rate = report.bytes / report.seconds / 1e6 if report.seconds else 0.0
    print(
        f"verify {report.scope}: {report.recordings} recordings, {report.objects} objects, "
        f"{report.bytes} bytes hashed in {report.seconds:.1f}s ({rate:.0f} MB/s)"
    )
    for rec_id in report.erased:
        print(f"  erased (tombstone): {rec_id}")
    for rec_id in report.held:
        print(f"  on legal hold: {rec_id}")
    for p in report.problems:
        print(f"  {p.kind}: {p.key or '-'}: {p.detail}")
    if report.ok:
        print("OK: no problems")
    else:
        kinds = ", ".join(f"{n} {k}" for k, n in report.kinds().items())
        print(f"FAILED: {len(report.problems)} problems ({kinds})")


# -- hold ------------------------------------------------------------------------------------


def _hold(args: argparse.Namespace) -> int:
    from compliance.errors import NotFoundError
    from compliance.holds import clear_hold, list_holds, set_hold
    from compliance.recordings import cli_actor

    settings = _settings(args)
    store = _store(settings)
    if args.action == "list":
        records = list_holds(store, include_cleared=args.all)
        if args.json:
            _print_json([asdict_struct(r) for r in records])
        else:
            for r in records:
                state = "active" if r.active else f"cleared {r.cleared_at} by {r.cleared_by}"
                print(
                    f"{r.recording_id}  call {r.call_id}  set {r.set_at} by {r.set_by}  "
                    f"{state}  reason: {r.reason}"
                )
            print(f"({len(records)} hold{'s' if len(records) != 1 else ''})")
        return 0
    if not args.call_id and not args.sql:
        _err(f"hold {args.action}: give --call-id or --sql")
        return 2
    if not args.reason:
        _err(f"hold {args.action}: --reason is required")
        return 2
    try:
        rec_ids = _selected(settings, store, args.call_id, args.sql)
    except (NotFoundError, ValueError) as exc:
        _err(str(exc))
        return 1
    actor, address = cli_actor()
    if args.action == "set":
        report = set_hold(store, rec_ids, args.reason, actor, address)
    else:
        report = clear_hold(
            store, rec_ids, args.reason, actor, address, policy_hold=settings.s3_legal_hold
        )
    for change in report.changed:
        print(
            f"{args.action}: {change.recording_id} (call {change.record.call_id}, "
            f"{change.objects} objects)"
        )
    for rec_id in report.missing:
        print(f"not found: {rec_id}")
    return 1 if report.missing else 0


def asdict_struct(value: Any) -> Any:
    import msgspec

    return msgspec.to_builtins(value)


# -- retention -------------------------------------------------------------------------------


def _retention(args: argparse.Namespace) -> int:
    from compliance.recordings import cli_actor
    from compliance.retention import apply_retention

    settings = _settings(args)
    store = _store(settings)
    policy = settings.retention_policy()
    actor, address = cli_actor()
    report = apply_retention(store, policy, actor, address, dry_run=args.dry_run)
    if args.json:
        _print_json([asdict(d) for d in report.decisions])
    else:
        for d in report.decisions:
            if d.outcome != "kept":
                print(
                    f"{d.outcome}: {d.recording_id} (call {d.call_id}, expired "
                    f"{d.expires.isoformat() if d.expires else 'never'})"
                    + (f": {d.detail}" if d.detail else "")
                )
        counts = ", ".join(
            f"{report.count(o)} {o}"
            for o in ("deleted", "would_delete", "kept", "held", "retained", "failed")
            if report.count(o)
        )
        print(
            f"retention ({policy.days or 'forever'} days default, {len(policy.rules)} "
            f"rules): {counts or 'no recordings'}"
        )
    return 1 if report.count("failed") else 0


# -- erase -----------------------------------------------------------------------------------


def _erase(args: argparse.Namespace) -> int:
    from compliance.erasure import erase_call, erase_number
    from compliance.errors import ComplianceError
    from compliance.recordings import cli_actor

    settings = _settings(args)
    store = _store(settings)
    actor, address = cli_actor()
    try:
        if args.call_id:
            report = erase_call(store, args.call_id, args.reason, actor, address)
        else:
            report = erase_number(store, args.number, args.reason, actor, address)
    except ComplianceError as exc:
        _err(f"erase refused: {exc}")
        return 1
    for stone in report.erased:
        print(
            f"erased: {stone.recording_id} (call {stone.call_id}, {len(stone.objects)} "
            f"objects; tombstone tombstones/{stone.recording_id}.json)"
        )
    for key in report.rewritten:
        print(f"rewritten without its rows: {key}")
    for key in report.call_rows:
        print(f"call row erased: {key}")
    return 0


# -- export ----------------------------------------------------------------------------------


def _export(args: argparse.Namespace) -> int:
    from compliance.errors import NotFoundError
    from compliance.export import SigningKeyError, check_bundle, export_call, new_key_pair
    from compliance.recordings import cli_actor

    if args.new_key:
        private, public = new_key_pair()
        base = Path(args.new_key)
        priv_path, pub_path = base.with_suffix(".key"), base.with_suffix(".pub")
        priv_path.touch(mode=0o600, exist_ok=False)
        priv_path.write_bytes(private)
        pub_path.write_bytes(public)
        print(
            f"private key: {priv_path} (set CALLREC_EXPORT_SIGNING_KEY from it, via a "
            f"Secret)\npublic key:  {pub_path} (give it to whoever checks bundles)"
        )
        return 0
    if args.check:
        if not args.key:
            _err("export --check needs --key PUBLIC_KEY_FILE")
            return 2
        try:
            check = check_bundle(Path(args.check), Path(args.key).read_text())
        except SigningKeyError as exc:
            _err(str(exc))
            return 2
        for problem in check.problems:
            print(f"  {problem}")
        print(
            f"{args.check}: {check.files} files, key {check.key_id}: "
            f"{'signature and every file verify' if check.ok else 'FAILED'}"
        )
        return 0 if check.ok else 1
    if not args.call_id or not args.output:
        _err("export: give CALL_ID and -o bundle.zip (or --check, or --new-key)")
        return 2
    settings = _settings(args)
    if settings.export_signing_key is None:
        _err(
            "export: CALLREC_EXPORT_SIGNING_KEY is not set (callrec export --new-key makes "
            "a key pair)"
        )
        return 2
    store = _store(settings)
    actor, address = cli_actor()
    try:
        result = export_call(
            store,
            args.call_id,
            Path(args.output),
            settings.export_signing_key.get_secret_value(),
            actor,
            address,
            settings.lock_policy(),
        )
    except (NotFoundError, SigningKeyError) as exc:
        _err(f"export: {exc}")
        return 1
    print(
        f"{result.path}: {len(result.files)} files of {len(result.recordings)} recordings, "
        f"signed with key {result.key_id}; verification "
        f"{'passed' if result.verified else 'FOUND PROBLEMS (see verification.json)'}"
    )
    return 0 if result.verified else 1


# -- audit -----------------------------------------------------------------------------------


def _audit(args: argparse.Namespace) -> int:
    from compliance.audit import verify_log

    settings = _settings(args)
    store = _store(settings)
    report = verify_log(store)
    if args.json:
        _print_json(
            {
                "ok": report.ok,
                "entries": report.entries,
                "head_seq": report.head_seq,
                "head_sha256": report.head_hash,
                "problems": report.problems,
            }
        )
    else:
        for problem in report.problems:
            print(f"  {problem}")
        print(
            f"audit trail: {report.entries} entries, head seq {report.head_seq} sha256 "
            f"{report.head_hash}: {'OK' if report.ok else 'FAILED'}"
        )
    return 0 if report.ok else 1


# -- registration ----------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the compliance commands to ``callrec``."""
    archive = argparse.ArgumentParser(add_help=False)
    archive.add_argument(
        "--archive",
        metavar="URI",
        help="directory or s3://bucket/prefix (default: CALLREC_ARCHIVE_URI)",
    )
    archive.add_argument("--json", action="store_true", help="JSON output")

    verify = sub.add_parser(
        "verify",
        parents=[archive],
        help="re-hash every archived object against its manifest; check tables and locks",
        description="Re-hash the objects of every recording (or a date range, or calls) "
        "against its manifest, streaming and in parallel; report missing, changed and "
        "unclaimed objects, calls rows that disagree with their manifest, and Object Lock "
        "or legal holds that differ from the policy. Exit 1 on any problem. "
        "docs/compliance.md.",
    )
    verify.add_argument(
        "--from",
        dest="date_from",
        type=_date,
        metavar="YYYY-MM-DD",
        help="only recordings with table rows on or after this UTC day",
    )
    verify.add_argument(
        "--to",
        dest="date_to",
        type=_date,
        metavar="YYYY-MM-DD",
        help="only recordings with table rows on or before this UTC day",
    )
    verify.add_argument(
        "--call-id",
        action="append",
        default=[],
        metavar="ID",
        help="only this call's recordings (repeatable)",
    )
    verify.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="objects hashed at once (default: CALLREC_VERIFY_WORKERS)",
    )
    verify.add_argument(
        "--record", action="store_true", help="write the result to verify/last.json in the archive"
    )
    verify.add_argument("--no-progress", action="store_true", help="no progress bar")
    verify.set_defaults(func=_reported(_verify))

    hold = sub.add_parser(
        "hold",
        parents=[archive],
        help="set, clear or list legal holds on recordings",
        description="Put (or lift) an S3 Object Lock legal hold on every object of the "
        "recordings of the given calls or of the rows an SQL query selects, and record it in "
        "holds/<recording_id>.json (the holds view of callrec query).",
    )
    hold.add_argument("action", choices=("set", "clear", "list"))
    hold.add_argument(
        "--call-id",
        action="append",
        default=[],
        metavar="ID",
        help="a call whose recordings to hold (repeatable)",
    )
    hold.add_argument(
        "--sql",
        help='recordings selected by SQL, e.g. "SELECT recording_id '
        "FROM calls WHERE date = '2025-11-24'\"",
    )
    hold.add_argument("--reason", help="why (a case or matter reference): required for set/clear")
    hold.add_argument("--all", action="store_true", help="list: cleared holds too")
    hold.set_defaults(func=_reported(_hold))

    retention = sub.add_parser(
        "retention",
        parents=[archive],
        help="delete recordings past the retention policy (not those on hold)",
        description="Delete every recording older than CALLREC_RETENTION_DAYS (or its "
        "CALLREC_RETENTION_RULES), with its table rows, unless on legal hold; Object Lock "
        "retention that has not run out is reported, not broken. Idempotent, resumable.",
    )
    retention.add_argument("action", choices=("apply",))
    retention.add_argument(
        "--dry-run", action="store_true", help="say what would be deleted; delete nothing"
    )
    retention.set_defaults(func=_reported(_retention))

    erase = sub.add_parser(
        "erase",
        parents=[archive],
        help="erase a call (GDPR/CCPA): audio, transcript, manifest, rows; leave a tombstone",
        description="Remove every recording of a call (or of every call with a phone number): "
        "WAV, transcript, manifest and table rows, leaving a tombstone (who, when, why, the "
        "sha256 of what was erased). Refused for calls on hold or under Object Lock.",
    )
    target = erase.add_mutually_exclusive_group(required=True)
    target.add_argument("--call-id", metavar="ID")
    target.add_argument(
        "--number",
        metavar="E164",
        help="every call from or to this number (needs the calls table's "
        "from_number/to_number columns)",
    )
    erase.add_argument("--reason", required=True, help="why (the request's reference)")
    erase.set_defaults(func=_reported(_erase))

    export = sub.add_parser(
        "export",
        parents=[archive],
        help="signed evidence bundle of a call; --check verifies one offline",
        description="Write a ZIP with a call's WAV, transcript, manifest, custody, a fresh "
        "verification and its audit entries, signed with Ed25519 "
        "(CALLREC_EXPORT_SIGNING_KEY). --check verifies a bundle with a public key; "
        "--new-key makes a key pair.",
    )
    export.add_argument("call_id", nargs="?", metavar="CALL_ID")
    export.add_argument("-o", "--output", metavar="BUNDLE.zip")
    export.add_argument("--check", metavar="BUNDLE.zip", help="verify this bundle offline")
    export.add_argument("--key", metavar="PUBLIC_KEY", help="public key file for --check")
    export.add_argument(
        "--new-key", metavar="PATH", help="write a new key pair to PATH.key (private) and PATH.pub"
    )
    export.set_defaults(func=_reported(_export))

    audit = sub.add_parser(
        "audit",
        parents=[archive],
        help="verify the hash-chained audit trail",
        description="Walk the audit trail from its first entry: report an edited, inserted "
        "or removed entry; print the head (seq and sha256) to keep elsewhere.",
    )
    audit.add_argument("action", choices=("verify",))
    audit.set_defaults(func=_reported(_audit))
