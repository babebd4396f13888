"""Settings of ``callrec console`` (``CALLREC_CONSOLE_*``, plus the archive's)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from infra.settings import ArchiveSettings


class ConsoleSettings(ArchiveSettings):
    """``callrec console``: the review web app over the archive."""

    console_host: str = "0.0.0.0"
    """Address the console's HTTP server binds."""
    console_port: int = Field(default=8081, ge=0, le=65535)
    """Port of the console, its ``/healthz``, ``/readyz`` and ``/metrics`` (0 = any free)."""
    console_users_file: str | None = None
    """File of built-in users, one ``user:role:<argon2 hash>`` a line (role: viewer,
    listener or compliance); make hashes with ``callrec console --hash-password``."""
    console_session_secret: SecretStr | None = None
    """Key that signs session cookies (32+ random bytes). Unset: a random key per process,
    so every restart logs everyone out (logged as a warning)."""
    console_session_max_age_s: int = Field(default=8 * 3600, ge=60)
    """A login lasts this long."""
    console_cookie_secure: bool = True
    """Mark the session cookie ``Secure`` (sent over HTTPS only; browsers also accept it
    on http://localhost). Turn off only for plain-HTTP tests on another host."""
    console_trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    """Comma-separated addresses of an authenticating proxy (oauth2-proxy); only requests
    from these may name the user in X-Forwarded-User / -Email / -Groups."""
    console_proxy_roles: Annotated[tuple[str, ...], NoDecode] = (
        "callrec-compliance=compliance",
        "callrec-listener=listener",
        "callrec-viewer=viewer",
    )
    """Comma-separated ``group=role`` pairs mapping X-Forwarded-Groups to roles (the
    highest role a user's groups give wins; no match: 403)."""
    console_page_size: int = Field(default=50, ge=1, le=1000)
    """Calls per page."""
    console_csv_max_rows: int = Field(default=100_000, ge=1)
    """Most rows of one CSV download."""
    console_index_refresh_s: float = Field(default=10.0, gt=0)
    """How often the calls index picks up recordings archived since (docs/console.md)."""
    console_index_dir: str | None = None
    """Directory of the calls index's DuckDB file, kept across restarts: a console that
    finds an index built for the same tables is ready at once and reads only what was
    archived since (docs/console.md). One console per directory. Unset: a temporary
    directory, removed at exit (the index is built at each start)."""
    console_index_memory_mb: int = Field(default=96, ge=32)
    """Memory the calls index may hold (DuckDB's memory_limit); the rest of the index
    stays in its file and is read back as pages are needed."""
    console_index_build_memory_mb: int = Field(default=128, ge=32)
    """DuckDB memory of the child process that loads many table files at once (the first
    load, a long catch-up); it exits when done."""
    console_index_readers: int = Field(default=16, ge=1, le=256)
    """Table files fetched at once from S3 while loading the index (round trips overlap;
    a local archive is read by DuckDB directly)."""
    console_peaks_cache: int = Field(default=64, ge=0)
    """Waveform peaks computed for recordings archived without them, kept in memory."""
    console_login_max_failures: int = Field(default=5, ge=0)
    """Failed logins of one user name within ``CALLREC_CONSOLE_LOGIN_WINDOW_S`` after which
    further attempts are refused (429 with Retry-After) until the oldest age out; 0: no
    limit. A successful login clears the count."""
    console_login_max_address_failures: int = Field(default=20, ge=0)
    """Failed logins from one client address within the window after which its attempts
    are refused (429); 0: no limit. Behind a proxy that is not in
    ``CALLREC_CONSOLE_TRUSTED_PROXIES`` every client has the proxy's address."""
    console_login_window_s: float = Field(default=900.0, gt=0)
    """The window, in seconds, over which failed logins are counted."""
    console_export_signing_key_file: str | None = None
    """File holding the Ed25519 private key that signs evidence exports (PEM or base64, as
    ``CALLREC_EXPORT_SIGNING_KEY``; on Kubernetes mounted from a Secret). Read at start-up
    (a bad key stops the console) and at each export. Unset: the call page has no export
    button and ``POST /calls/<id>/export`` answers 409."""

    @field_validator("console_trusted_proxies", "console_proxy_roles", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value
