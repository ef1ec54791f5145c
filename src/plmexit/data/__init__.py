"""Tasks: the task table and its readers (your own CSV/FASTA files, the benchmarks' formats, ProteinGym), the pinned data files and ProteinGym's released archives."""
