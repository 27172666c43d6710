"""Chat4All entrypoints/grpc package."""
