"""Training FLOPs, counted and predicted: `count` counts what a step dispatches (it sees
freezing and the sparse head) once per distinct step shape, `plan` predicts a whole run's FLOPs
from its allocation and schedule without training (`bench flops`), and `frontier` sets every
freeze policy's saving against the paper's 12.1 %. May import the model, freeze, config and
data layers; nothing that runs a round (fl/, dist/, flower/) imports back into it except to
count."""
