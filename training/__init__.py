"""Training scripts that build the repository's test fixtures (not part of the installed package)."""
