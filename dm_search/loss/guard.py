"""Signs that training has collapsed (outputs that no longer depend on the input, or explode),
and the error DMLoss(..., guard=True) raises when it sees them."""

from __future__ import annotations

import math

from torch import Tensor

__all__ = ["LOGIT_CEILING", "SPREAD_FLOOR", "TrainingCollapsed", "collapse_signs", "logit_health"]


class TrainingCollapsed(RuntimeError):
    """Training has collapsed: the network's outputs no longer depend on its input, or
    explode. Derivative normalisation keeps pushing each batch with the same total weight, so
    too high a learning rate can kill a network that plain CE would have let settle."""


# A network whose logits vary this little across a batch answers the same whatever it is
# shown: dead ReLUs (the usual way a too-high lr kills it) leave only the last layer's bias.
SPREAD_FLOOR = 1e-4
LOGIT_CEILING = 1e4  # float32 softmax still works, but nothing sensible is learnt up there


def collapse_signs(*, acc: float, chance: float, spread: float, absmax: float,
                   loss: float | None = None, num_classes: int = 0,
                   loss_over: float = 0.98) -> str | None:
    """Why training looks dead, or None. Only at chance accuracy (``acc`` within 0.02 of
    ``chance``), and then with exploding logits, logits that do not vary across examples, or
    a training cross-entropy ``loss`` of at least ``loss_over`` times a uniform guess's
    (log C)."""
    if acc > chance + 0.02:
        return None
    if not math.isfinite(absmax) or absmax > LOGIT_CEILING:
        return f"the logits explode (largest |logit| {absmax:.3g})"
    if spread < SPREAD_FLOOR:
        return (f"the network gives the same output for every input (logit spread "
                f"{spread:.2g})")
    if loss is not None and num_classes > 1 and loss >= loss_over * math.log(num_classes):
        return (f"the training loss ({loss:.3f}) is no better than a uniform guess's "
                f"(log C = {math.log(num_classes):.3f})")
    return None


def logit_health(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(spread, largest |logit|) of a batch, on its device: the mean over classes of the
    logits' standard deviation across examples, and the largest magnitude."""
    z = logits.detach().float()
    spread = z.std(0).mean() if z.shape[0] > 1 else z.new_tensor(math.inf)
    return spread, z.abs().amax()
