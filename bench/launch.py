"""`bench run --nproc N`: the same run over N local ranks, started through torchrun.

The ranks are `python -m bench run … --executor distributed` processes under
`torch.distributed.run --standalone`; on a failure, torchrun stops them all and this prints the
first rank's own error (not the errors of the ranks that lost their peer) in one line.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from rich.markup import escape

from fdapt_core.config.run import RunConfig
from fdapt_core.dist.launch import first_failure

# torchrun's own logging and its failure report: the ranks' errors are reported instead
_NOISE = re.compile(r"^(\[?[WEI]\d{4} |\*{5}|Traceback|  File |    |\S+Error|\S+Exception|=+$|"
                    r"Root Cause|Failures:|Other Failures|\[\d+\]:|  (time|host|rank|exitcode|"
                    r"error_file|traceback)|-+$|<NO_OTHER_FAILURES>|  [a-z_]+:|\s*$|"
                    r"\S+\.py:\d+: |\S+ FAILED$|\[rank\d+\]:)")


def launch_local(err, nproc: int, cfg: RunConfig, method: str, config: Optional[Path],
                 sets: list[str], resume: bool) -> int:
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "bench", "run", "--method", method,
            "--executor", "distributed"]
    if config is not None:
        args += ["--config", str(config)]
    for s in sets:
        args += ["--set", s]
    if resume:
        args.append("--resume")
    env = {**os.environ, "FDAPT_LAUNCHED_BY": "bench", "OMP_NUM_THREADS":
           os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))}
    since = time.time()
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True, bufsize=1)
    for line in proc.stderr:
        if not _NOISE.match(line) and "torch.distributed" not in line:
            sys.stderr.write(line)
    code = proc.wait()
    if code == 0:
        return 0
    cause = first_failure(cfg, method, since)
    err.print(f"[red]error:[/red] {escape(cause or f'torchrun exited with code {code}')}; the "
              "last finished round is kept: continue with --resume", highlight=False,
              soft_wrap=True)
    return 1
