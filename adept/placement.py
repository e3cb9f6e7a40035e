"""Where Ray would place a job's (or a Serve application's) resources on a cluster of a given shape.

A small model of Ray's placement, the one owner of "does this fit": each demand is a resource bundle (a Ray
Train worker, the job's driver, a Serve replica); bundles go first-fit onto running nodes, and where none has
room the autoscaler's choice is mirrored: a new node of a group that is below its ``max_replicas`` and can hold
the bundle, preferring groups without GPUs for bundles that need none (Ray's autoscaler avoids GPU nodes for
CPU-only work). The head is a node like any other, so a head with ``num-cpus: 0`` hosts no driver.

- ``check_job_fits(shape, workers)``: a fine-tuning job (its workers plus the driver's entrypoint CPUs) can be
  placed at the cluster's largest size, or ``InvalidRequest`` says what is missing. The owner of jobs calls it
  when it creates one (``adept.finetuning.service.FineTuning._check_plan``), so a job that would wait forever
  for nodes is refused at once.
- ``default_job_resources(shape)``: the workers a job gets when it names none: one worker per GPU of a GPU
  node, leaving a CPU for the driver (``job_workers``: the owner's choice between the two).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adept.config.cluster_shape import ClusterShape, NodeGroupShape
from adept.config.training import WorkersSection
from adept.errors import InvalidRequest

ENTRYPOINT_NUM_CPUS = 1.0  # the driver of every submitted job (`--entrypoint-num-cpus 1`)
_EPS = 1e-9


class DoesNotFit(InvalidRequest):
    """Demands that no node the cluster can have would hold (the job would stay pending forever)."""


@dataclass
class Node:
    group: str
    free: dict[str, float]
    placed: list[str] = field(default_factory=list)

    def fits(self, bundle: dict[str, float]) -> bool:
        return all(self.free.get(k, 0.0) + _EPS >= v for k, v in bundle.items() if v > 0)

    def take(self, bundle: dict[str, float], what: str) -> None:
        for k, v in bundle.items():
            self.free[k] = self.free.get(k, 0.0) - v
        self.placed.append(what)


@dataclass
class Placement:
    """Nodes in use after placing every demand (the head first)."""

    nodes: list[Node]

    def count(self, group: str) -> int:
        return sum(1 for n in self.nodes if n.group == group)

    def where(self, what: str) -> str:
        return next(n.group for n in self.nodes if what in n.placed)


def worker_bundle(workers: WorkersSection) -> dict[str, float]:
    """What one Ray Train worker reserves (training.recipes: 1 CPU by default, plus 1 GPU with use_gpu)."""
    bundle = dict(workers.resources_per_worker or {"CPU": 1.0})
    if workers.use_gpu:
        bundle.setdefault("GPU", 1.0)
    return {k: float(v) for k, v in bundle.items()}


def _describe(bundle: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(bundle.items()) if v) + "}"


def _describe_shape(shape: ClusterShape) -> str:
    groups = [shape.head, *shape.groups]
    return "; ".join(f"{g.name}: {g.max_replicas} x {_describe(g.offers())}" for g in groups)


def place(
    shape: ClusterShape, demands: list[tuple[str, dict[str, float]]], *, running: dict[str, int] | None = None
) -> Placement:
    """Place ``(name, bundle)`` demands, growing groups up to ``max_replicas``.

    ``running``: nodes per group before placing (default: each group's ``min_replicas``).

    Raises:
        DoesNotFit: a demand fits no running node and no group can add one that holds it.
    """
    running = running or {g.name: g.min_replicas for g in shape.groups}
    nodes = [Node(shape.head.name, shape.head.offers())]
    for g in shape.groups:
        nodes += [Node(g.name, g.offers()) for _ in range(min(running.get(g.name, 0), g.max_replicas))]
    # Largest first (GPUs, then CPUs): what Ray's bin packing does with a placement group's bundles.
    order = sorted(demands, key=lambda d: (-d[1].get("GPU", 0.0), -d[1].get("CPU", 0.0)))
    for what, bundle in order:
        node = next((n for n in nodes if n.fits(bundle)), None)
        if node is None:
            node = _scale_up(shape, nodes, bundle)
        if node is None:
            raise DoesNotFit(
                f"{what} needs {_describe(bundle)}, which no node of the cluster can hold at its largest size "
                f"(already placed: {', '.join(w for n in nodes for w in n.placed) or 'nothing'}; cluster: "
                f"{_describe_shape(shape)}); it would wait for resources forever"
            )
        node.take(bundle, what)
    return Placement(nodes)


def _scale_up(shape: ClusterShape, nodes: list[Node], bundle: dict[str, float]) -> Node | None:
    wants_gpu = bundle.get("GPU", 0.0) > 0
    candidates: list[tuple[tuple[bool, float], NodeGroupShape]] = []
    for g in shape.groups:
        if sum(1 for n in nodes if n.group == g.name) >= g.max_replicas:
            continue
        if not Node(g.name, g.offers()).fits(bundle):
            continue
        # Ray's autoscaler keeps CPU-only work off GPU nodes; then the least idle capacity.
        waste = sum(v for v in g.offers().values()) - sum(bundle.values())
        candidates.append(((not wants_gpu and g.gpus > 0, waste), g))
    if not candidates:
        return None
    group = min(candidates, key=lambda c: c[0])[1]
    node = Node(group.name, group.offers())
    nodes.append(node)
    return node


def job_demands(
    workers: WorkersSection, entrypoint_num_cpus: float = ENTRYPOINT_NUM_CPUS
) -> list[tuple[str, dict]]:
    bundle = worker_bundle(workers)
    out: list[tuple[str, dict]] = [(f"train worker {i}", bundle) for i in range(workers.num_workers)]
    if entrypoint_num_cpus > 0:
        out.append(("the job's driver", {"CPU": float(entrypoint_num_cpus)}))
    return out


def place_job(
    shape: ClusterShape, workers: WorkersSection, *, entrypoint_num_cpus: float = ENTRYPOINT_NUM_CPUS
) -> Placement:
    """Where a fine-tuning job's workers and driver land (the training group starts from ``min_replicas``)."""
    return place(shape, job_demands(workers, entrypoint_num_cpus))


def check_job_fits(
    shape: ClusterShape | None, workers: WorkersSection, *, entrypoint_num_cpus: float = ENTRYPOINT_NUM_CPUS
) -> None:
    """Refuse a job the training cluster can never run (no shape known: nothing to check).

    Raises:
        DoesNotFit: an ``InvalidRequest`` (HTTP 400, CLI exit 2) naming the bundle and the cluster's groups.
    """
    if shape is None:
        return
    try:
        place_job(shape, workers, entrypoint_num_cpus=entrypoint_num_cpus)
    except DoesNotFit as e:
        raise DoesNotFit(
            f"this fine-tuning job cannot run on the training cluster: {e}", param="workers"
        ) from None


def default_job_resources(
    shape: ClusterShape, entrypoint_num_cpus: float = ENTRYPOINT_NUM_CPUS
) -> WorkersSection:
    """Workers for a job that names none: every GPU of one GPU node, one worker each; else one CPU worker.

    Each worker gets an equal share of the node's CPUs after the driver's, so the job fits one node.
    """
    gpu_groups = [g for g in shape.groups if g.gpus >= 1 and g.max_replicas > 0]
    if gpu_groups:
        g = max(gpu_groups, key=lambda x: x.gpus)
        n = int(g.gpus)
        cpus = max(1.0, float((g.cpus - entrypoint_num_cpus) // n))
        return WorkersSection(num_workers=n, use_gpu=True, resources_per_worker={"CPU": cpus, "GPU": 1.0})
    cpu_groups = [g for g in shape.groups if g.max_replicas > 0 and g.cpus >= 1]
    if not cpu_groups:
        return WorkersSection(num_workers=1, resources_per_worker={"CPU": 1.0})
    g = max(cpu_groups, key=lambda x: x.cpus)
    cpus = max(1.0, g.cpus - entrypoint_num_cpus) if g.cpus > entrypoint_num_cpus else 1.0
    return WorkersSection(num_workers=1, resources_per_worker={"CPU": cpus})


def job_workers(
    configured: WorkersSection,
    explicitly_set: bool,
    shape: ClusterShape | None,
    entrypoint_num_cpus: float = ENTRYPOINT_NUM_CPUS,
) -> WorkersSection:
    """The workers a job runs with: what it (or the platform config) says, else the training group's default."""
    if explicitly_set or shape is None:
        return configured
    return default_job_resources(shape, entrypoint_num_cpus)


def fit_job(job: Any, shape: ClusterShape | None, entrypoint_num_cpus: float = ENTRYPOINT_NUM_CPUS) -> Any:
    """A training config (``FineTuneJobConfig``) with the training group's default workers when it names none,
    checked to fit: what ``FineTuning.create_from_config`` makes of a FineTuneJob or an ``adept finetune``
    config (the chart tests place the shipped configs and README examples with it).

    Raises:
        DoesNotFit: the job can never be placed on the training cluster.
    """
    workers = job_workers(job.workers, "workers" in job.model_fields_set, shape, entrypoint_num_cpus)
    check_job_fits(shape, workers, entrypoint_num_cpus=entrypoint_num_cpus)
    return job if workers is job.workers else job.model_copy(update={"workers": workers})
