"""The glue: one function per CLI step (file I/O around the computing modules) and the config -> workflow plan."""
