"""The kernel model: behaviour epochs, THE merge rules, and the VMA simulator.

``changes`` is the cited table of kernel changes; ``epochs.epoch_for(release)`` maps a
release string to an :class:`epochs.Epoch` from it; ``vmflags`` holds the VM_* bits;
``rules`` holds the merge/split/anon_vma predicates that both the simulator and the
explainer (``vmascope analyze``, through ``pairs.explain_pair``) use; ``sim`` runs op
scripts. Nothing here reads the host (see ``vmascope.host``).
"""

from .epochs import Epoch, epoch_for
from .pairs import explain_pair
from .rules import Reason

__all__ = ["Epoch", "Reason", "epoch_for", "explain_pair"]
