"""Coding: rows as arrangements of their seeded init, and the entropy coders that store
them.

``arrangement`` (rows as multiset arrangements, the bound B), ``buckets`` (rank
buckets), ``rans`` (the interleaved rANS coder, numpy reference), one module per
payload coding (``raw``, ``perm_rans``, ``row_rans``, ``bucket_rans``) behind
``registry``, ``runs`` (decoding in bounded memory) and ``encoder`` (which coding each
tensor gets). Works on numpy arrays; imports the core and the kernels, never torch.
"""
