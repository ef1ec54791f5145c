"""Tasks: the task table and its readers (your own CSV/FASTA files, the benchmarks' official formats, ProteinGym), and the official data files."""
