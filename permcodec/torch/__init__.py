"""The torch binding: seed modules, save and load `.perm` files as torch tensors.

``api`` (``init``, ``save``, ``load``, checkpoints), ``ops`` (the core's operations on
torch tensors, dtype conversions), ``device_decode`` (decoding on a GPU). Everything
below this layer works on numpy arrays.
"""

from .api import (
    PLAN_ATTR,
    default_targets,
    init,
    load,
    load_checkpoint,
    register_stored_view,
    save,
    save_checkpoint,
    stored_state_dict,
    unwrap,
)
from .ops import TorchOps, format_dtype, generate_torch, to_numpy, to_torch, torch_dtype

__all__ = [
    "PLAN_ATTR",
    "TorchOps",
    "default_targets",
    "format_dtype",
    "generate_torch",
    "init",
    "load",
    "load_checkpoint",
    "register_stored_view",
    "save",
    "save_checkpoint",
    "stored_state_dict",
    "to_numpy",
    "to_torch",
    "torch_dtype",
    "unwrap",
]
