"""The version of permcodec (also written into every `.perm` file's metadata)."""

__version__ = "0.7.0"
