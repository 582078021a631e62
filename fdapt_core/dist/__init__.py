"""Spreading a run over processes: the torch.distributed world, client groups, data-parallel
steps inside a group, and the executor that deals clients to groups (see `executor.py`)."""
