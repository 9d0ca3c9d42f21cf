"""``python -m permcodec.cli`` runs the command line."""

from .main import main

main()
