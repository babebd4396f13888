"""The review console: find, play and check recordings in a browser (docs/console.md)."""
