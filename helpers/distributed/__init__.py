"""Distributed training and serving on one machine: torchrun workers and Ray Serve.

The worker modules (``ddp``, ``local_sgd``, ``sharding``, ``tuning``) run under
``python -m torch.distributed.run``; ``launch.run_workers`` starts them from a
notebook or test and returns the JSON that rank 0 wrote, and ``trace`` reads
the profiler traces they export. ``ray_serving`` hosts the book's model
server on Ray Serve, and ``load`` sends bounded loopback traffic with retries.
"""
