"""The paper's dynamic fusion dropout: the probability that e_j is dropped changes from epoch to epoch."""

import logging

from transformers import TrainerCallback


logger = logging.getLogger(__name__)


def parse_schedule(spec: str, num_epochs: int) -> list[float]:
    """`0to1` / `1to0`: linear over the epochs; or a comma-separated list, one value per epoch (the last repeats)."""
    if spec in ("0to1", "1to0"):
        steps = max(num_epochs - 1, 1)
        ramp = [epoch / steps for epoch in range(num_epochs)]
        return ramp if spec == "0to1" else [1.0 - p for p in ramp]
    try:
        values = [float(v) for v in spec.split(",")]
    except ValueError:
        raise ValueError(f"fusion_dropout_schedule={spec!r}: use 0to1, 1to0 or a list such as 0.5,0.25,0") from None
    if not values or not all(0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"fusion_dropout_schedule={spec!r}: probabilities must lie in [0, 1].")
    return values


class FusionDropoutSchedule(TrainerCallback):
    """Sets the model's fusion dropout at the start of every epoch from a per-epoch schedule (training state: the
    saved config keeps its own fusion_dropout)."""

    def __init__(self, schedule: list[float]):
        self.schedule = schedule

    def probability(self, epoch: float) -> float:
        return self.schedule[min(int(epoch), len(self.schedule) - 1)]

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        p = self.probability(state.epoch or 0)
        model.set_fusion_dropout(p)
        logger.info("epoch %d: fusion dropout %.3f", int(state.epoch or 0), p)
        # kept in trainer_state.json with the losses, so a run's schedule can be read back beside its curve
        state.log_history.append({"epoch": state.epoch or 0.0, "step": state.global_step, "fusion_dropout": p})
