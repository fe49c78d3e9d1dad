"""The paper's dynamic fusion dropout: the probability that e_j is dropped changes during training."""

import logging

from transformers import TrainerCallback


logger = logging.getLogger(__name__)
# the paper's schedules: five levels, each held for a fifth of training
NAMED_SCHEDULES = {"0to1": [0.0, 0.25, 0.5, 0.75, 1.0], "1to0": [1.0, 0.75, 0.5, 0.25, 0.0]}


def parse_schedule(spec: str) -> list[float]:
    """`0to1` / `1to0` (the paper's 0, .25, .5, .75, 1 and back), or a comma-separated list of probabilities; the
    levels are held for equal parts of training, in order."""
    if spec in NAMED_SCHEDULES:
        return list(NAMED_SCHEDULES[spec])
    try:
        values = [float(v) for v in spec.split(",")]
    except ValueError:
        raise ValueError(f"fusion_dropout_schedule={spec!r}: use 0to1, 1to0 or a list such as 0.5,0.25,0") from None
    if not values or not all(0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"fusion_dropout_schedule={spec!r}: probabilities must lie in [0, 1].")
    return values


class FusionDropoutSchedule(TrainerCallback):
    """Sets the model's fusion dropout before every optimizer step from a schedule whose levels are held for equal
    parts of training (training state: the saved config keeps its own fusion_dropout). A resumed run picks the
    level of its step."""

    def __init__(self, schedule: list[float]):
        self.schedule = schedule
        self.current = None

    def probability(self, step: int, max_steps: int) -> float:
        level = step * len(self.schedule) // max(max_steps, 1)
        return self.schedule[min(level, len(self.schedule) - 1)]

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        p = self.probability(state.global_step, state.max_steps)
        if p == self.current:
            return
        self.current = p
        model.set_fusion_dropout(p)
        logger.info("step %d of %d: fusion dropout %.3f", state.global_step, state.max_steps, p)
        # kept in trainer_state.json with the losses, so a run's schedule can be read back beside its curve
        state.log_history.append({"epoch": state.epoch or 0.0, "step": state.global_step, "fusion_dropout": p})
