"""Rich progress bars for rounds, clients and steps, fed by the library's callbacks."""
from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)


class RichCallbacks:
    """Three bars: rounds of the run, clients of the round, steps of the client."""

    def __init__(self, label: str, console: Console):
        self.label = label
        self.progress = Progress(TextColumn("{task.description}", style="bold"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(),
                                 TimeRemainingColumn(), console=console, transient=True)
        self.rounds = self.clients = self.steps = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.rounds is not None:
            self.progress.__exit__(*exc)

    def round_start(self, round_index, n_rounds, clients):
        if self.rounds is None:
            # shown from the first round on: started before, the display printed a blank line
            # on stopping, ahead of the one-line error of a run refused while it prepared
            self.progress.__enter__()
            self.rounds = self.progress.add_task(f"{self.label} rounds", total=n_rounds,
                                                 completed=round_index)
            self.clients = self.progress.add_task("clients", total=len(clients))
            self.steps = self.progress.add_task("steps", total=1)
        self.progress.reset(self.clients, total=len(clients))

    def client_start(self, client, steps):
        name = "central" if self.label == "central" else f"client {client}"
        self.progress.reset(self.steps, total=steps, description=f"{name} steps")

    def step(self, step):
        self.progress.update(self.steps, completed=step)

    def client_end(self, client, stats):
        self.progress.advance(self.clients)

    def round_end(self, round_index, row):
        self.progress.update(self.rounds, completed=round_index + 1)
        self.progress.console.print(f"{self.label} round {round_index + 1}: held-out loss "
                                  f"{row['eval_loss']:.4f} (ppl {row['eval_ppl']:.2f}), "
                                  f"{row['wall_s']:.1f} s", highlight=False)

    def run_start(self, record):
        pass

    def run_end(self, record):
        pass
