"""Pipelines (OVMS's DAGs): config.json's `pipeline_config_list` served like models.

config.py reads the configuration, graph.py checks a pipeline's wiring, build.py binds it to the
models and custom nodes it runs, executor.py runs one request, serving.py makes it a model table
entry, manager.py follows config.json."""
