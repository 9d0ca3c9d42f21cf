"""LaPerm: train a network by reconnecting its seeded random weights (the trainer layer).

``optimizer`` (:class:`LaPerm`, a torch optimizer around any inner one) and ``sync``
(ranking rows and placing the initial values). Built on the torch binding.
"""

from .optimizer import LaPerm, SyncPeriod
from .sync import rank_order

__all__ = ["LaPerm", "SyncPeriod", "rank_order"]
