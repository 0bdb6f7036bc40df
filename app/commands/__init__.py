"""One module per CLI command; app/cli.py puts them together."""
