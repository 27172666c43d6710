"""Chat4All use cases: commands, queries and the ports they need."""
