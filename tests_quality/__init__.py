"""The quality gates of ``make quality`` (not part of ``make test``)."""
