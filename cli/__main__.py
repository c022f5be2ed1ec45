"""`python -m cli` is the same as the `realtybot` command."""

from cli.main import main

main()
