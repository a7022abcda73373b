"""How the pipeline is run, apart from what it is (pipeline.py): the local runner (kfp.local), the
submitter (kfp.Client), cluster placement of tasks and the printer of a finished run.

After the TFX template's split of `pipeline/` from `local_runner.py` and `kubeflow_runner.py`:
the runners take the DAG's builder as an argument, so nothing here imports pipeline.py.
"""
