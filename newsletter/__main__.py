"""`python -m newsletter` runs the CLI."""

from newsletter.entry import main

main()
