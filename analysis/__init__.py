"""Reading results: excitation analysis of a checkpoint, ablation reports, findings, curves and
figures. Reads files and may use senet; imports neither ablations nor Ray."""
