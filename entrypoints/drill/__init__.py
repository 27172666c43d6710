"""`chat4all drill <name>`: failure drills and the brief's demos, run against a live `chat4all up` (docs/drills.md)."""
