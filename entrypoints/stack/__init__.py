"""The embedded default: local servers that `chat4all up` and the test suite start themselves."""
