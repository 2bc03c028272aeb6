"""The kernel model: behaviour epochs, THE merge rules, and the VMA simulator.

``epochs.epoch_for(release)`` maps a release string to an :class:`epochs.Epoch`;
``rules`` holds the merge/split/anon_vma predicates that both the simulator and the
explainer (``vmascope analyze``) use; ``simulator`` runs op scripts.
"""

from .epochs import Epoch, epoch_for
from .rules import Reason, explain_pair

__all__ = ["Epoch", "Reason", "epoch_for", "explain_pair"]
