"""How pipeline.py's pieces become what kfp reads: one way to add a task (created, named, cached, placed) and the
pipeline function, whose signature is the run's parameters."""

from __future__ import annotations

from collections.abc import Callable
from inspect import Parameter, Signature

from runners.placement import Placement


def task_adder(place: Placement) -> Callable:
    """add(component, kind, ...): the one way a task joins the DAG: created from its inputs, shown in the UI by
    `display` (else the component's name), cached as `caching` says (else kfp's default), and placed as a `kind`
    task by `place` (resources, image, GPU, object storage's secret)."""

    def add(component, kind: str, *, display="", gpu=False, storage=False, caching: bool | None = None, **inputs):
        task = component(**inputs)
        task.set_display_name(display or component.name)
        if caching is not None:
            task.set_caching_options(enable_caching=caching)
        place(task, kind, gpu=gpu, storage=storage)
        return task

    return add


def pipeline_function(wire: Callable, defaults: dict, returns, descriptions: dict[str, str]) -> Callable:
    """The function kfp reads as the pipeline: its parameters are `defaults`' keys, in order, typed by their
    defaults and described by `descriptions` (the KFP UI shows them); kfp calls it once, and it calls `wire`
    with the parameters by name. One builder for the cluster's DAG and the local runner's."""
    names = list(defaults)

    def leukemia_pipeline(*values):
        return wire(**dict(zip(names, values)))

    leukemia_pipeline.__signature__ = Signature(
        [
            Parameter(name, Parameter.POSITIONAL_OR_KEYWORD, default=value, annotation=type(value))
            for name, value in defaults.items()
        ],
        return_annotation=returns,
    )
    args = "".join(f"    {name}: {descriptions[name]}\n" for name in names)
    leukemia_pipeline.__doc__ = f"Screen blood smears for leukemia and type it by FAB.\n\nArgs:\n{args}"
    return leukemia_pipeline
