"""``python -m vipcare`` runs the CLI."""

from vipcare.cli import main

main()
