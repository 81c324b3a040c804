"""Jobs: read a config, build the pieces from registries, run, write one results folder."""
