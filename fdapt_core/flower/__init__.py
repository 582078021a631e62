"""The harness's clients and server as a Flower app (flwr >= 1.2x, Message API).

* `client.app`: a `ClientApp` whose `train` runs the harness's own client round
  (`fl.client.Client.train` on the server's `RoundTask`: load the global model, freeze, train,
  encode the upload)
  on the partition named by the node's `partition-id`.
* `server.app`: a `ServerApp` whose `main` runs the harness's own round loop (strategy, freeze
  plans, held-out evaluation, checkpoints, the run record) with `FlowerExecutor`, which sends
  each sampled client its round through the Flower `Grid` and decodes the replies.
* `simulation.run_flower`: `dist.executor: flower`, the same two apps submitted with `flwr run`
  to a SuperLink in simulation mode (Ray workers) on this machine.

Flower is imported only here (the `flower` extra).
"""

import os
import time

# when the harness's code began in this process: a fresh ClientApp process's imports are
# measured from here (flower.phases)
IMPORTS_STARTED = time.time()

# no reporting home from a benchmark: Flower's telemetry and Ray's usage stats stay off
# unless the user turned them on (read when flwr and ray are first imported)
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
