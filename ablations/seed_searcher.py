"""The Ray Tune face of :class:`ablations.sequencer.SeedSequencer`: a ``Searcher`` under a
``ConcurrencyLimiter``. Imported only when a sequential sweep trains (it loads Ray)."""
from __future__ import annotations

import pickle

from ray.tune.search import ConcurrencyLimiter, Searcher

from .sequencer import SeedSequencer


class SeedSearcher(Searcher):
    """Asks the sequencer for the next (arm, seed) and tells it each trial's final result. Its state
    is saved with Tune's experiment state; a restore reads the study's table again, so results that
    arrived after the last save are known before anything is suggested."""

    def __init__(self, seq: SeedSequencer):
        super().__init__(metric=seq.metric, mode="min")
        self.seq = seq

    def set_search_properties(self, metric, mode, config, **spec):
        return True  # the sequencer names every trial's arm and seed; there is no space to search

    def suggest(self, trial_id):
        got = self.seq.suggest(trial_id)
        return Searcher.FINISHED if got == "FINISHED" else got

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.seq.complete(trial_id, result, error)

    def save(self, checkpoint_path):
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.seq.__getstate__(), f)

    def restore(self, checkpoint_path):
        with open(checkpoint_path, "rb") as f:
            self.seq.__dict__.update(pickle.load(f))
        self.seq.load_table()


def seed_searcher(seq: SeedSequencer, max_concurrent: int) -> ConcurrencyLimiter:
    return ConcurrencyLimiter(SeedSearcher(seq), max_concurrent=max(1, int(max_concurrent)))
