"""The archive's tables as DuckDB views: ``calls``, ``segments``, ``metrics`` and ``audit``.

The archive is a local directory (embedded mode, or a copy of the bucket) or
``s3://bucket/prefix`` (S3, MinIO). Each table is a view over
``tables/<table>/date=YYYY-MM-DD/*.parquet`` with the Hive partition column
``date`` (a DATE):

- **Local directory**: DuckDB's own ``read_parquet`` (``hive_partitioning``,
  ``union_by_name``, so files written by older schema versions still read).
- **S3**: a pyarrow dataset on ``pyarrow.fs.S3FileSystem``, registered in
  DuckDB, which scans it with projection and filter pushdown. DuckDB's httpfs
  extension would be the other way, but extensions are downloaded at run time
  and the wheel does not bundle httpfs; pyarrow's S3 client ships in the wheel,
  so the views work offline and in air-gapped clusters alike. The dataset's
  schema is the table's current schema (``schemas.tables``): columns added
  later read as null from older files.

The ``audit`` view is the audit trail (``audit/<seq>.json``, one entry per
object, see compliance/audit.py), read entry by entry; ``holds`` and
``tombstones`` are the legal holds and erasure records (``schemas.compliance``,
docs/compliance.md).

The ``calls`` view adds ``recording_uri`` and ``manifest_uri``: the archive
root joined with the row's ``recording_key`` / ``manifest_key``, so the links
follow the archive wherever it is queried from.

Used by ``callrec query`` (docs/analytics.md) and the review console's index
(docs/console.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pyarrow as pa

from infra.errors import InfraError
from schemas.audit import AUDIT_PREFIX, audit_table
from schemas.compliance import HOLDS_PREFIX, TOMBSTONES_PREFIX, holds_table, tombstones_table
from schemas.tables import ALL_TABLES as TABLES
from schemas.tables import PARTITION_COLUMN

if TYPE_CHECKING:
    import duckdb

    from infra.settings import ArchiveSettings


class TablesError(InfraError):
    """The archive could not be opened, or the SQL failed; the message says which."""


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _full_schema(table: str) -> pa.Schema:
    schema = TABLES[table].schema
    return schema.append(pa.field(PARTITION_COLUMN, pa.date32()))


def connect(
    archive_uri: str,
    settings: ArchiveSettings | None = None,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    records: bool = True,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the views ``calls``, ``segments``, ``metrics`` (each also
    as ``<table>_files``: the stored columns, without derived URIs), ``audit``, ``holds``
    and ``tombstones``.

    ``archive_uri``: a directory, ``file:///dir`` or ``s3://bucket/prefix``;
    ``settings`` gives the S3 endpoint and credentials (unset: AWS defaults); ``con``: add
    the views to this connection instead of a new in-memory one; ``records=False`` leaves
    the audit, holds and tombstones views empty (they are read object by object).
    """
    import duckdb

    if con is None:
        con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    parts = urlsplit(archive_uri)
    if parts.scheme == "s3":
        _attach_s3(con, parts.netloc, parts.path.strip("/"), settings, records)
        root = archive_uri.rstrip("/")
    elif parts.scheme in ("", "file"):
        path = Path(parts.path if parts.scheme == "file" else archive_uri).expanduser()
        if not path.is_dir():
            raise TablesError(f"archive directory {path} does not exist")
        _attach_local(con, path.resolve())
        root = str(path.resolve())
        for prefix, register in _RECORDS:
            folder = path / prefix
            register(
                con,
                (
                    p.read_bytes()
                    for p in sorted(folder.glob("*.json"))
                    if records and not p.name.startswith(".")
                ),
            )
    else:
        raise TablesError(f"unsupported archive URI {archive_uri!r}: use a directory or s3://")
    _add_uris(con, root)
    return con


def _attach_local(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    for name in TABLES:
        folder = root / "tables" / name
        if any(folder.glob(f"{PARTITION_COLUMN}=*/*.parquet")):
            pattern = str(folder / f"{PARTITION_COLUMN}=*" / "*.parquet")
            con.execute(
                f"CREATE VIEW {name}_files AS SELECT * FROM read_parquet({_quote(pattern)}, "
                f"hive_partitioning = true, union_by_name = true, "
                f"hive_types = {{'{PARTITION_COLUMN}': DATE}})"
            )
        else:
            _register_empty(con, name)


def _register_empty(con: duckdb.DuckDBPyConnection, name: str) -> None:
    empty = _full_schema(name).empty_table()
    con.register(f"{name}_arrow", empty)
    con.execute(f"CREATE VIEW {name}_files AS SELECT * FROM {name}_arrow")


def s3_filesystem(settings: ArchiveSettings | None) -> Any:
    """pyarrow's S3 filesystem for the archive settings (MinIO: path-style, http or https)."""
    from pyarrow import fs

    options: dict[str, Any] = {}
    if settings is not None:
        if settings.s3_endpoint_url:
            endpoint = urlsplit(settings.s3_endpoint_url)
            options["endpoint_override"] = endpoint.netloc or endpoint.path
            options["scheme"] = endpoint.scheme or "https"
        options["region"] = settings.s3_region
        if settings.s3_access_key_id is not None and settings.s3_secret_access_key is not None:
            options["access_key"] = settings.s3_access_key_id.get_secret_value()
            options["secret_key"] = settings.s3_secret_access_key.get_secret_value()
    return fs.S3FileSystem(**options)


def _attach_s3(
    con: duckdb.DuckDBPyConnection,
    bucket: str,
    prefix: str,
    settings: ArchiveSettings | None,
    records: bool = True,
) -> None:
    import pyarrow.dataset as ds
    from pyarrow import fs

    if not bucket:
        raise TablesError("s3:// URI without a bucket")
    s3 = s3_filesystem(settings)
    top = f"{bucket}/{prefix}" if prefix else bucket
    base = f"{top}/tables"

    def read(path: str) -> bytes:
        with s3.open_input_stream(path) as stream:
            data: bytes = stream.read()
        return data

    for prefix, register in _RECORDS:
        try:
            infos = (
                s3.get_file_info(fs.FileSelector(f"{top}/{prefix}", allow_not_found=True))
                if records
                else []
            )
        except OSError as exc:
            raise TablesError(f"cannot list s3://{top}/{prefix}: {exc}") from None
        entries = sorted(
            i.path for i in infos if i.type == fs.FileType.File and i.path.endswith(".json")
        )
        register(con, map(read, entries))
    for name in TABLES:
        schema = _full_schema(name)
        try:
            infos = s3.get_file_info(
                fs.FileSelector(f"{base}/{name}", recursive=True, allow_not_found=True)
            )
        except OSError as exc:
            raise TablesError(f"cannot list s3://{base}/{name}: {exc}") from None
        files = sorted(
            i.path
            for i in infos
            if i.type == fs.FileType.File
            and i.path.endswith(".parquet")
            and not i.base_name.startswith((".", "_"))
        )
        if not files:
            _register_empty(con, name)
            continue
        dataset = ds.dataset(
            files,
            schema=schema,
            format="parquet",
            filesystem=s3,
            partitioning=ds.partitioning(
                pa.schema([schema.field(PARTITION_COLUMN)]), flavor="hive"
            ),
            partition_base_dir=f"{base}/{name}",
        )
        con.register(f"{name}_arrow", dataset)
        con.execute(f"CREATE VIEW {name}_files AS SELECT * FROM {name}_arrow")


def _register_audit(con: duckdb.DuckDBPyConnection, entries: Iterable[bytes]) -> None:
    con.register("audit_arrow", audit_table(entries))
    con.execute("CREATE VIEW audit AS SELECT * FROM audit_arrow")


def _register_holds(con: duckdb.DuckDBPyConnection, records: Iterable[bytes]) -> None:
    con.register("holds_arrow", holds_table(records))
    con.execute("CREATE VIEW holds AS SELECT * FROM holds_arrow")


def _register_tombstones(con: duckdb.DuckDBPyConnection, records: Iterable[bytes]) -> None:
    con.register("tombstones_arrow", tombstones_table(records))
    con.execute("CREATE VIEW tombstones AS SELECT * FROM tombstones_arrow")


_RECORDS: tuple[tuple[str, Callable[[duckdb.DuckDBPyConnection, Iterable[bytes]], None]], ...] = (
    (AUDIT_PREFIX, _register_audit),
    (HOLDS_PREFIX, _register_holds),
    (TOMBSTONES_PREFIX, _register_tombstones),
)
"""The archive's JSON records shown as views: the audit trail, holds, tombstones."""


def _add_uris(con: duckdb.DuckDBPyConnection, root: str) -> None:
    """The public views; ``calls`` gains absolute URIs derived from its relative keys."""
    for name in TABLES:
        select = "*"
        if name == "calls":
            columns = {row[0] for row in con.execute("DESCRIBE calls_files").fetchall()}
            prefix = _quote(root + "/")
            derived, replaced = [], []
            for key, uri in (("recording_key", "recording_uri"), ("manifest_key", "manifest_uri")):
                if key not in columns:
                    continue
                if uri in columns:  # files of an older layout stored the URI itself
                    replaced.append(uri)
                    derived.append(f"coalesce({uri}, {prefix} || {key}) AS {uri}")
                else:
                    derived.append(f"{prefix} || {key} AS {uri}")
            exclude = f" EXCLUDE ({', '.join(replaced)})" if replaced else ""
            select = ", ".join([f"*{exclude}", *derived])
        con.execute(f"CREATE VIEW {name} AS SELECT {select} FROM {name}_files")
