"""Linear probes per layer and fold, their solvers, and the honest choice of a layer."""
