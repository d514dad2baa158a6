"""Immutable agent versions: version files, registration, the catalog on ``coalmine.versions``.

Pure parts, no I/O: :mod:`~streams.versions.load` (a version file's bytes → bundle and
metadata, or one line saying what is wrong), :mod:`~streams.versions.catalog` (what the topic
says, and whether a registration is new, a no-op or refused), :mod:`~streams.versions.diff`
(two versions side by side, for a person). :mod:`~streams.versions.registry` reads and writes
the topic; :mod:`~streams.versions.cli` is ``coalmine versions``.
"""
