"""Where a step that must be computed runs: here (the default) or on a Dask cluster
(MODELMAKE_EXECUTOR, docs/cluster.md). config.py is plain data read when tasks load;
cluster.py imports dask.distributed inside its functions."""
