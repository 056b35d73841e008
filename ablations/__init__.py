"""Ablation studies of the SE design space as Ray Tune sweeps: the study registry, the sweep and its
results store. Imports senet, never analysis."""
