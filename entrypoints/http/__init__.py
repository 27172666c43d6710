"""Chat4All entrypoints/http package."""
