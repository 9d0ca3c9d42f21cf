"""The ``permcodec`` command line: a thin click layer over the library (``permcodec.cli``)."""
