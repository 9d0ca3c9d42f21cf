"""The ``permcodec`` command line (installed as the package ``permcodec_cli``)."""
