"""Settings of the compliance commands (``callrec verify|hold|retention|erase|export|audit``).

The archive variables (``CALLREC_ARCHIVE_URI``, ``CALLREC_S3_*``) plus the
retention policy, the export signing key and verify's parallelism.
docs/compliance.md explains each; docs/configuration.md lists them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from compliance.policy import LockPolicy, RetentionPolicy, RetentionRule
from infra.settings import ArchiveSettings


class RetentionRuleSetting(BaseModel):
    """One rule of ``CALLREC_RETENTION_RULES`` (a JSON list; the first that matches wins)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    days: int = Field(ge=0)
    """Keep matching recordings this many days after they started (0: forever)."""
    direction: str | None = None
    """Match the ``calls.direction`` column (e.g. ``inbound``), when the table has it."""
    number_prefix: str | None = None
    """Match a ``calls.from_number`` or ``to_number`` starting with this (e.g. ``+44``)."""


class ComplianceSettings(ArchiveSettings):
    """The compliance commands: archive access, retention policy, export signing key."""

    retention_days: int = Field(default=0, ge=0)
    """Default retention: ``callrec retention apply`` deletes recordings that started more
    than this many days ago (and are on no hold); 0 keeps everything forever."""
    retention_rules: list[RetentionRuleSetting] = Field(default_factory=list)
    """JSON list of rules tried before the default, first match wins, e.g.
    ``[{"direction": "inbound", "days": 2555}, {"number_prefix": "+44", "days": 1825}]``.
    Rules need the ``calls`` columns they name; without them a rule never matches."""
    export_signing_key: SecretStr | None = None
    """Ed25519 private key that signs evidence exports: PEM (PKCS#8) or the raw 32-byte
    key in base64 (``callrec export --new-key`` makes one). From a Secret; never logged."""
    verify_workers: int = Field(default=8, ge=1, le=64)
    """Objects ``callrec verify`` hashes at once (threads; memory: 1 MiB per thread)."""

    def lock_policy(self) -> LockPolicy:
        return LockPolicy(
            mode=self.s3_object_lock_mode,
            days=self.s3_object_lock_days,
            legal_hold=self.s3_legal_hold,
        )

    def retention_policy(self) -> RetentionPolicy:
        return RetentionPolicy(
            days=self.retention_days,
            rules=tuple(
                RetentionRule(days=r.days, direction=r.direction, number_prefix=r.number_prefix)
                for r in self.retention_rules
            ),
        )
