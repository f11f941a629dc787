"""Model replicas and their supervision.

`pool.WorkerPool` feeds each replica from the batcher and restarts the ones that die;
`local.LocalReplica` is a worker process on this machine (`worker_main` is that process's
``main``, `channel` the frames between them); `ray_replicas.RayReplica` is a Ray actor on a
cluster node. `runtime.load_encoder` is what every replica runs at its start.
"""
