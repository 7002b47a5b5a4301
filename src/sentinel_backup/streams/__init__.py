"""Composable streaming stages.

Every stage is a :class:`Sink` that transforms what is written to it and writes the
result to the next sink. A chain is built back to front, e.g. for a backup::

    stored = Digest(fanout)                  # SHA-256 and size of the stored bytes
    chain = Digest(compressor(enc(stored)))  # SHA-256 and size of the raw dump

``close()`` flushes a stage and closes the next one, so closing the head finishes the
whole chain. Reading (verify, restore) uses the same stages in reverse order.
"""

from sentinel_backup.streams.base import NullSink, Sink, pump

__all__ = ["NullSink", "Sink", "pump"]
