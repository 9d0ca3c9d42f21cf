"""``python -m permcodec_cli`` runs the command line."""

from .main import main

main()
