"""The training stages, in one place: the DAG wires them, the stage runner trains them, evaluation
scores them, release picks from them and the report names them.

The paper's multistage transfer learning is ImageNet -> stage 1 (single cells, all classes) ->
stage 2 (single cells, blast or not) -> stage 3 (smears: detection, and FAB classification); the
classical arm goes from ImageNet straight to stage 3's tasks with the same budget. A new stage or
arm is one more `TrainingStage` here; `check_plan` refuses a plan that cannot run before any DAG
is built from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leukemia_mtl.errors import LeukemiaMtlError

KINDS = ("stage1", "stage2", "stage3", "classical")  # what run_finetune_stage can train

# --- the run's vocabulary, in one place: every module (and, through /ui/model.json, the page) reads these ---
POSITIVE_CLASS = "ALL"  # detection's positive class: a smear of any ALL type (the negative one is data.negative_class)
CELL_POSITIVE, CELL_NEGATIVE = "blast", "not a blast"  # a single cell's verdicts (the cell scorer's classes)
TRAINED_TASKS = (
    "blast",
    "detection",
    "fab",
)  # every task a stage trains: blast on single cells; detection and FAB on smears
# the tasks cross-validation scores (and release ships, the report tables): SCORED_TASKS, from the plan below
TASK_NAMES = {
    "detection": f"detection (normal vs {POSITIVE_CLASS})",
    "fab": "classification (FAB classes)",
}  # a scored task in a report

MTL, CTL = "mtl", "ctl"  # the transfer-learning arms a stage is scored as
TRANSFER_ARMS = (MTL, CTL)  # multistage first: the order tables read in
# models on the same folds that learnt nothing about cells (leukemia_mtl.baselines); FEATURES (frozen ImageNet
# features + logistic regression) only where the run had ImageNet weights
COLOUR, MAJORITY, FEATURES = "colour", "majority", "features"
BASELINE_ARMS = (COLOUR, MAJORITY, FEATURES)
ARM_NAMES = {  # every arm, transfer learning and baseline, as a report names it
    MTL: "multistage transfer learning",
    CTL: "classical transfer learning",
    COLOUR: "colour histogram + logistic regression (baseline)",
    MAJORITY: "majority class (baseline: one answer for every image)",
    FEATURES: "frozen ImageNet features + logistic regression (baseline)",
}


class StageError(LeukemiaMtlError):
    """A stage asked for something that does not fit: task, previous model, backbone."""


@dataclass(frozen=True)
class TrainingStage:
    key: str  # the component input and output name: stage3_detection
    display: str  # the task's name in the KFP UI and the report: stage 3 detection
    kind: str  # one of KINDS
    task: str  # one of TRAINED_TASKS
    starts_from: str | None  # the key of the stage whose model it continues; None: ImageNet (or random) weights
    head: str  # softmax or sigmoid
    arrays: str  # which of augment's arrays it trains on (stage1.npz, stage2.npz, stage3.npz)
    dense: bool  # dense layers with dropout before the head (Eq. 2); without: GAP + the head (Eq. 1)
    arm: str | None = None  # the cross-validated arm it is scored as (one of TRANSFER_ARMS); None: not scored

    @property
    def from_imagenet(self) -> bool:
        return self.starts_from is None

    @property
    def scored(self) -> bool:
        return self.arm is not None


# A table reads best as rows: one stage per line, every field named (the formatter would give each field a line).
# fmt: off
TRAINING_STAGES: tuple[TrainingStage, ...] = (
    TrainingStage(key="stage1", display="stage 1", kind="stage1", task="blast", starts_from=None,
                  head="softmax", arrays="stage1", dense=False),
    TrainingStage(key="stage2", display="stage 2", kind="stage2", task="blast", starts_from="stage1",
                  head="sigmoid", arrays="stage2", dense=True),
    TrainingStage(key="stage3_detection", display="stage 3 detection", kind="stage3", task="detection",
                  starts_from="stage2", head="softmax", arrays="stage3", dense=True, arm=MTL),
    TrainingStage(key="stage3_fab", display="stage 3 FAB", kind="stage3", task="fab",
                  starts_from="stage2", head="softmax", arrays="stage3", dense=True, arm=MTL),
    TrainingStage(key="classical_detection", display="classical detection", kind="classical", task="detection",
                  starts_from=None, head="softmax", arrays="stage3", dense=True, arm=CTL),
    TrainingStage(key="classical_fab", display="classical FAB", kind="classical", task="fab",
                  starts_from=None, head="softmax", arrays="stage3", dense=True, arm=CTL),
)
# fmt: on
ARMS = {s.kind: s.arm for s in TRAINING_STAGES if s.arm}  # stage kind -> arm: {"stage3": "mtl", "classical": "ctl"}
KIND_OF_ARM = {arm: kind for kind, arm in ARMS.items()}
CELL_SCORER = "stage2"  # the stage whose model predict scores single cells with (released beside stage 3)
CELL_SCORER_ARM = next(s.arm for s in TRAINING_STAGES if s.starts_from == CELL_SCORER and s.arm)  # its cells feed mtl
SCORED_TASKS = tuple(dict.fromkeys(s.task for s in TRAINING_STAGES if s.arm))  # ("detection", "fab"): on smears


def scored_stages(plan: tuple[TrainingStage, ...] = TRAINING_STAGES) -> tuple[TrainingStage, ...]:
    return tuple(s for s in plan if s.scored)


def released_stages(plan: tuple[TrainingStage, ...] = TRAINING_STAGES) -> tuple[TrainingStage, ...]:
    """What release picks from: the scored stages and the cell scorer."""
    return tuple(s for s in plan if s.scored or s.key == CELL_SCORER)


def check_plan(plan: tuple[TrainingStage, ...] = TRAINING_STAGES) -> tuple[TrainingStage, ...]:
    """The plan, or one StageError naming the first stage that cannot run as written."""
    seen: dict[str, TrainingStage] = {}
    for stage in plan:
        where = f"training stage {stage.key!r}"
        if stage.key in seen:
            raise StageError(f"{where}: named twice")
        if stage.kind not in KINDS:
            raise StageError(f"{where}: kind {stage.kind!r} is not one of {', '.join(KINDS)}")
        if stage.task not in TRAINED_TASKS or (stage.kind in ("stage1", "stage2")) != (stage.task == "blast"):
            raise StageError(
                f"{where}: stage {stage.kind} does not do task {stage.task!r} "
                "(stages 1-2: blast; stage 3 and classical: detection, fab)"
            )
        if stage.from_imagenet != (stage.kind in ("stage1", "classical")):
            raise StageError(
                f"{where}: {stage.kind} {'needs a previous stage' if stage.from_imagenet else 'starts from ImageNet'}"
            )
        if stage.starts_from is not None and stage.starts_from not in seen:
            raise StageError(f"{where}: starts from {stage.starts_from!r}, which is not an earlier stage of the plan")
        if stage.head not in ("softmax", "sigmoid"):
            raise StageError(f"{where}: head {stage.head!r} is neither softmax nor sigmoid")
        if stage.arm is not None and (stage.arm not in TRANSFER_ARMS or stage.task == "blast"):
            raise StageError(f"{where}: only smear tasks are scored, as one of the arms {', '.join(TRANSFER_ARMS)}")
        seen[stage.key] = stage
    if CELL_SCORER not in seen:
        raise StageError(f"the plan has no {CELL_SCORER!r} stage, which release needs as the cell scorer")
    return plan


def training_stage(kind: str, task: str, plan: tuple[TrainingStage, ...] = TRAINING_STAGES) -> TrainingStage:
    """The plan's stage of `kind` doing `task`: what the stage runner trains."""
    if kind not in KINDS:
        raise StageError(f"unknown stage {kind!r}; one of {', '.join(KINDS)}")
    for stage in plan:
        if (stage.kind, stage.task) == (kind, task):
            return stage
    raise StageError(
        f"stage {kind} does not do task {task!r} (stages 1-2: blast; stage 3 and classical: detection, fab)"
    )


def by_key(key: str, plan: tuple[TrainingStage, ...] = TRAINING_STAGES) -> TrainingStage:
    for stage in plan:
        if stage.key == key:
            return stage
    raise StageError(f"no training stage {key!r}; the plan has {', '.join(s.key for s in plan)}")


def display_name(kind: str) -> str:
    """stage3 -> 'stage 3'; classical stays."""
    return kind.replace("stage", "stage ") if kind.startswith("stage") else kind


def task_classes(classes: tuple[str, ...], task: str, negative_class: str) -> tuple[str, ...]:
    return (negative_class, POSITIVE_CLASS) if task == "detection" else tuple(classes)


def task_names(labels: np.ndarray, task: str, negative_class: str) -> np.ndarray:
    """Class names of `task` (detection merges every ALL type into one class)."""
    labels = np.asarray(labels)
    return np.where(labels == negative_class, negative_class, POSITIVE_CLASS) if task == "detection" else labels


def check_fan_in(plan: tuple[TrainingStage, ...], collectors: dict) -> None:
    """The plan fits the pipeline's components: the stage runner trains each stage as the plan says (it looks a
    stage up by its kind and task), and every stage a collecting component (`collectors`: component -> the stages
    it takes) has an input for is in the plan, and the other way round. Reads only the components' names and
    input specs, so the library needs no kfp."""
    for stage in plan:
        trained = training_stage(stage.kind, stage.task)
        if (stage.head, stage.arrays, stage.dense) != (trained.head, trained.arrays, trained.dense):
            raise StageError(
                f"training stage {stage.key!r}: the stage runner trains {stage.kind} {stage.task} with a "
                f"{trained.head} head on {trained.arrays} arrays, dense layers {trained.dense}; the plan says "
                f"{stage.head}, {stage.arrays}, {stage.dense}"
            )
    known = {s.key for s in TRAINING_STAGES} | {s.key for s in plan}
    for component, stages in collectors.items():
        keys, inputs = [s.key for s in stages], component.component_spec.inputs
        missing = [key for key in keys if key not in inputs]
        if missing:
            raise StageError(f"the {component.name} component has no input for the training stage(s) {missing}")
        unfed = sorted(name for name in inputs if name in known and name not in keys)
        if unfed:
            raise StageError(
                f"the {component.name} component takes the training stage(s) {unfed}, which the plan does not "
                "train (or score)"
            )
