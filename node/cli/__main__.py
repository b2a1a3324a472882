"""`python -m node.cli` runs the credex command line (what scripts and tests use)."""

from node.cli import main

main()
