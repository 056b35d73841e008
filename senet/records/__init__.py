"""Results I/O: what sweeps write and reports read, shared by :mod:`ablations` and :mod:`analysis`.

- :mod:`~senet.records.layout`: where a run's and a study's files are, and atomic JSON writers;
- :mod:`~senet.records.study_file`: ``study.json``, read and written here alone;
- :mod:`~senet.records.trial_index`: every recorded trial by its identity ``(config_id, seed)``;
- :mod:`~senet.records.recipe`: the recipe hash that tells experiments apart;
- :mod:`~senet.records.object_store`: ``s3://`` and other storage URIs, read through a local copy.

Importing any of them loads neither torch nor Ray: the few functions that need the config's keys
import :mod:`senet.config` (and so torch) when they are called.
"""
