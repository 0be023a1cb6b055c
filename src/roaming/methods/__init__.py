"""The registry of training methods: what each one puts in the network's channel slots.

A method is a few facts the training loop reads, not a class hierarchy: the slot kind after every
shared conv, whether masks are initialised (task routing) and whether they roam, whether the run
trains one task only, and how shared-feature methods weigh the task losses
(:mod:`roaming.methods.weighting`). Adding a method is one entry here plus whatever its slot or
weighting needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from roaming.errors import ConfigError


@dataclass(frozen=True)
class Method:
    """How one method trains."""

    name: str
    slot: str
    masked: bool
    roams: bool
    single_task: bool
    summary: str
    weighting: str = "sum"

    @property
    def task_specific(self) -> bool:
        """Each task needs its own forward pass through the shared network."""
        return self.slot != "none"


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("stl", "none", False, False, True, "single-task learning: one network per task"),
        Method("mtl", "none", False, False, False, "hard sharing, sum of task losses"),
        Method(
            "gradnorm",
            "none",
            False,
            False,
            False,
            "hard sharing, task weights balancing gradient norms (GradNorm)",
            weighting="gradnorm",
        ),
        Method(
            "mgda",
            "none",
            False,
            False,
            False,
            "hard sharing, min-norm combination of representation gradients (MGDA-UB)",
            weighting="mgda",
        ),
        Method("se", "se", False, False, False, "per-task squeeze-excitation in every layer"),
        Method("tr", "mask", True, False, False, "task routing: fixed random channel masks"),
        Method("mr", "mask", True, True, False, "maximum roaming: masks that roam every Δ"),
    )
}


def get_method(name: str) -> Method:
    """The method called ``name``; a :class:`ConfigError` listing the known ones otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        known = ", ".join(METHODS)
        raise ConfigError(f"unknown method {name!r} (known: {known})") from None
