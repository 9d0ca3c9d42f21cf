"""The `.perm` file: container layout, limits, typed entries, writer and reader.

``container`` (preamble, msgpack header, payload area, checksums; every field checked
before it is trusted), ``limits`` (what a reader accepts), ``entry`` (header entries
parsed once into typed records), ``writer`` and ``reader`` (:class:`PermFile`),
``atomic`` (writes that never leave a partial file). Works on numpy arrays; never
imports torch.
"""
