"""The shape of a Ray cluster as KubeRay runs it: what each node of each group offers Ray, and how many.

The chart renders it from the same values it renders the training RayCluster from, into the platform config
(``training_shape``) of the gateway and the operator, so fine-tuning jobs default to the training group's GPUs
and a job that could never be placed is refused when it is created (``adept.placement``).
"""

from __future__ import annotations

import math
import re
from typing import Any

from pydantic import Field, field_validator

from adept.config.base import StrictModel

_SUFFIX = {
    "": 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
}


def quantity(value: Any) -> float:
    """A Kubernetes quantity (``"8"``, ``"500m"``, ``4``) as a number.

    Raises:
        ValueError: not a quantity.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2) not in _SUFFIX:
        raise ValueError(f"not a quantity: {value!r}")
    return float(m.group(1)) * _SUFFIX[m.group(2)]


def ray_cpus(value: Any) -> float:
    """The CPUs Ray advertises for a container CPU limit or a ``num-cpus`` param (KubeRay rounds up)."""
    return float(math.ceil(quantity(value) - 1e-9))


class NodeGroupShape(StrictModel):
    """One node (pod) of a group and how many of them the autoscaler may run."""

    name: str = Field(min_length=1, description="Group name (`head`, `gpu-workers`, ...).")
    cpus: float = Field(
        ge=0, description="`CPU` the node offers Ray (num-cpus, else its CPU limit, rounded up)."
    )
    gpus: float = Field(0, ge=0, description="`GPU` the node offers Ray (its `nvidia.com/gpu`).")
    resources: dict[str, float] = Field(default_factory=dict, description="Custom Ray resources of the node.")
    min_replicas: int = Field(0, ge=0, description="Nodes always running.")
    max_replicas: int = Field(1, ge=0, description="Most nodes the autoscaler runs.")

    @field_validator("cpus", "gpus", mode="before")
    @classmethod
    def _quantity(cls, v: Any) -> float:
        return ray_cpus(v) if v not in (None, "") else 0.0

    @field_validator("resources", mode="before")
    @classmethod
    def _resources(cls, v: Any) -> dict[str, float]:
        return {str(k): quantity(x) for k, x in (v or {}).items()}

    def offers(self) -> dict[str, float]:
        """Ray resources of one node of this group."""
        return {"CPU": self.cpus, "GPU": self.gpus, **self.resources}


class ClusterShape(StrictModel):
    """A Ray cluster's head and worker groups (KubeRay's ``headGroupSpec`` and ``workerGroupSpecs``)."""

    head: NodeGroupShape = Field(description="The head (one node; `num-cpus: 0` keeps jobs off it).")
    groups: list[NodeGroupShape] = Field(default_factory=list, description="Worker groups.")

    def gpus_per_node(self) -> float:
        """GPUs of the group with the most GPUs per node (0: a CPU-only cluster)."""
        return max((g.gpus for g in self.groups if g.max_replicas), default=0.0)
