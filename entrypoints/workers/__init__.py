"""Chat4All entrypoints/workers package."""
