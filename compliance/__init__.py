"""Compliance operations on the archive: the audit trail, verify, holds, retention,
erasure and signed evidence exports.

A library on the shared floor (it knows the store and the contracts, no
service): the ``callrec`` commands and the console call the same functions.
docs/compliance.md says what each guarantee means.
"""
