"""Chat4All entrypoints package."""
