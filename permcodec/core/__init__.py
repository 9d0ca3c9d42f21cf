"""The numpy core: the generator, deterministic math, initializers, dtypes and the plan.

Everything a decoder needs to regenerate a tensor's initial values, bit for bit on any
platform. Imports numpy and, for speed, the kernels layer; never torch.
"""
