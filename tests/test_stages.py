"""The stage plan: one description of the training stages that the DAG, the stage runner and
evaluation all read, and that refuses a plan which cannot run before any DAG is built."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format
from kfp import compiler
from kfp.pipeline_spec import pipeline_spec_pb2

import pipeline
from leukemia_mtl.config import get_profile
from leukemia_mtl.stages import (
    ARMS,
    KIND_OF_ARM,
    TRAINING_STAGES,
    StageError,
    by_key,
    check_plan,
    released_stages,
    scored_stages,
    training_stage,
)


def _spec(pipeline_func) -> pipeline_spec_pb2.PipelineSpec:
    with tempfile.TemporaryDirectory() as tmp:
        compiler.Compiler().compile(pipeline_func, f"{tmp}/p.yaml")
        docs = list(yaml.safe_load_all(Path(f"{tmp}/p.yaml").read_text()))
    return json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())


def test_the_plan_is_the_papers_stages_and_arms():
    check_plan()
    assert [(s.display, s.starts_from) for s in TRAINING_STAGES] == [
        ("stage 1", None),
        ("stage 2", "stage1"),
        ("stage 3 detection", "stage2"),
        ("stage 3 FAB", "stage2"),
        ("classical detection", None),
        ("classical FAB", None),
    ]
    assert ARMS == {"stage3": "mtl", "classical": "ctl"} and KIND_OF_ARM == {"mtl": "stage3", "ctl": "classical"}
    assert [s.key for s in scored_stages()] == [
        "stage3_detection",
        "stage3_fab",
        "classical_detection",
        "classical_fab",
    ]
    assert [s.key for s in released_stages()] == ["stage2"] + [s.key for s in scored_stages()]
    assert training_stage("stage2", "blast").head == "sigmoid" and not training_stage("stage1", "blast").dense


def _replaced(key: str, **changes) -> tuple:
    return tuple(dataclasses.replace(s, **changes) if s.key == key else s for s in TRAINING_STAGES)


@pytest.mark.parametrize(
    "plan, message",
    [
        (_replaced("stage2", starts_from=None), "stage2 needs a previous stage"),
        (_replaced("classical_fab", starts_from="stage2"), "classical starts from ImageNet"),
        (_replaced("stage1", task="detection"), "stage stage1 does not do task 'detection'"),
        (_replaced("stage3_fab", task="blast"), "stage stage3 does not do task 'blast'"),
        (_replaced("stage3_fab", starts_from="classical_fab"), "not an earlier stage of the plan"),
        (_replaced("stage3_fab", arm="best"), "only smear tasks are scored"),
        (_replaced("stage1", kind="stage0"), "kind 'stage0' is not one of"),
        (TRAINING_STAGES + (TRAINING_STAGES[0],), "named twice"),
        (tuple(s for s in TRAINING_STAGES if s.key != "stage2"), "starts from 'stage2', which is not an earlier stage"),
    ],
)
def test_an_impossible_plan_is_refused_when_the_dag_is_built(plan, message):
    with pytest.raises(StageError, match=message):
        check_plan(plan)
    with pytest.raises(StageError, match=message):
        pipeline.build_pipeline(plan=plan)


def test_a_stage_the_fan_in_components_cannot_take_is_refused_by_name():
    extra = dataclasses.replace(by_key("stage3_fab"), key="stage3_fab_again", display="stage 3 FAB again")
    with pytest.raises(
        StageError, match=r"the crossval component has no input for the training stage\(s\) \['stage3_fab_again'\]"
    ):
        pipeline.build_pipeline(plan=TRAINING_STAGES + (extra,))


def test_the_stage_runner_refuses_a_pair_the_plan_does_not_have():
    with pytest.raises(StageError, match="unknown stage 'stage4'"):
        training_stage("stage4", "fab")
    with pytest.raises(StageError, match="stage classical does not do task 'blast'"):
        training_stage("classical", "blast")


def test_the_dag_trains_exactly_the_plan_in_its_order():
    spec = _spec(pipeline.build_pipeline(profile="demo"))
    loop = next(name for name in spec.root.dag.tasks if name.startswith("for-loop"))
    inner = spec.components[spec.root.dag.tasks[loop].component_ref.name].dag.tasks
    by_display = {s.display: s for s in TRAINING_STAGES}
    names = {task.task_info.name: name for name, task in inner.items()}
    assert set(by_display) <= set(names)
    for display, stage in by_display.items():
        task = inner[names[display]]
        wanted = {"augment"} | ({names[by_key(stage.starts_from).display]} if stage.starts_from else set())
        assert set(task.dependent_tasks) == wanted, display
        params = task.inputs.parameters
        assert (
            params["stage"].runtime_value.constant.string_value,
            params["task"].runtime_value.constant.string_value,
        ) == (stage.kind, stage.task)


def test_settings_given_to_a_local_run_reach_the_dag_itself():
    """run_local resolves the settings once and builds the DAG from them: --set train.parallel_runs
    reaches the ParallelFor (it used to be dropped: the DAG was built from the profile alone)."""
    overrides = {"train.parallel_runs": 1}
    spec = _spec(pipeline.build_pipeline(get_profile("demo", overrides), run_overrides=overrides))
    loop = next(t for name, t in spec.root.dag.tasks.items() if name.startswith("for-loop"))
    assert loop.iterator_policy.parallelism_limit == 1
    assert (
        spec.root.input_definitions.parameters["overrides"].default_value.string_value == '{"train.parallel_runs": 1}'
    )


def test_a_plan_the_stage_runner_would_train_otherwise_or_a_component_would_miss_is_refused():
    with pytest.raises(StageError, match="the stage runner trains stage2 blast with a sigmoid head"):
        pipeline.build_pipeline(plan=_replaced("stage2", head="softmax"))
    without = tuple(s for s in TRAINING_STAGES if s.key != "classical_fab")
    check_plan(without)  # a plan of its own may leave an arm out ...
    with pytest.raises(StageError, match=r"the crossval component takes the training stage\(s\) \['classical_fab'\]"):
        pipeline.build_pipeline(plan=without)  # ... but not while crossval's inputs still ask for it
