"""Batch work for the command line: tasks, schedulers (threads, dask.distributed), batch files.

``tasks`` describes one image, plane or tile of work and runs many of them on threads or a dask
cluster; ``files`` reads batch inputs a plane at a time and writes outputs and label volumes;
``dask_worker`` prepares dask workers. It sits beside ``cli/`` above the engine: it imports only
the engine and the model (no napari, no Qt), and only ``cli/`` imports it.
"""
