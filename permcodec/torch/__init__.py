"""The torch binding: seed modules, save and load `.perm` files as torch tensors.

``api`` (``init``, ``save``, ``load``, checkpoints), ``ops`` (the core's operations on
torch tensors, dtype conversions), ``device_decode`` (decoding on a GPU), ``calibrate``
(the rise of a model's loss when one matrix changes, for ``save(..., calibration=)``). Everything
below this layer works on numpy arrays.
"""

from ..errors import require

require("torch", "permcodec.torch (seeding, saving and loading torch modules)", "torch", "torch")

from .api import (  # noqa: E402
    EMBEDDING_SCHEME,
    PLAN_ATTR,
    TorchFile,
    default_scheme,
    default_targets,
    init,
    load,
    load_checkpoint,
    load_model,
    plan_in_state_dict,
    register_stored_view,
    save,
    save_checkpoint,
    stored_state_dict,
    unwrap,
)
from .ops import (  # noqa: E402
    TorchOps,
    device_of,
    format_dtype,
    generate_torch,
    to_numpy,
    to_torch,
    torch_dtype,
)

__all__ = [
    "EMBEDDING_SCHEME",
    "PLAN_ATTR",
    "TorchFile",
    "TorchOps",
    "default_scheme",
    "default_targets",
    "device_of",
    "format_dtype",
    "generate_torch",
    "init",
    "load",
    "load_checkpoint",
    "load_model",
    "plan_in_state_dict",
    "register_stored_view",
    "save",
    "save_checkpoint",
    "stored_state_dict",
    "to_numpy",
    "to_torch",
    "torch_dtype",
    "unwrap",
]
