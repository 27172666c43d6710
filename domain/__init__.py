"""The Chat4All domain model: pure, synchronous, free of frameworks and I/O."""
