"""Subcommands of the `twinsearch` command line."""
