"""Generated protobuf messages of ``remotemedia.v1`` (see ``regen.py``; do not edit)."""
