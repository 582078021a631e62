"""A study on a lent GPU that reaches no network and takes at most 64 MiB of luggage a call.

Three steps, for `configs/study-gpu.yaml` (or another study file: --config):

    python scripts/gpu_study.py pack      # here: fill .gpu/ (git-ignored) with what it needs
    bash scripts/gpu_study.sh             # there, .gpu carried: run the study for a budget
    python scripts/gpu_study.py unpack F  # here: the records that came back, into results/

`pack` writes the start model's weights rounded to float16 (the float32 package is 88 MB, over
the limit; every method and `general` start from the same rounded model, and its record names
it), the corpus and the study's task files as one xz tarball, and wheels of the packages the
GPU image lacks, at this environment's versions. `run` (called by gpu_study.sh) unpacks them,
widens the weights back to float32, runs `bench study` until its budget, and leaves under
$OUT one tarball of every record (no weights) and the log. A cell cut off by the budget is
left out, so the next call trains it from the start: finished cells are reused from the
committed records, the head warm-up is trained again (seeded) and checked against its record.
`unpack` puts the records where `bench study` and `bench report` read them.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PACK = Path(".gpu")  # relative to the repository root: the records name the model by it
MODEL = PACK / "all-minilm-l6-v2-fp16"  # the start model there (float32 of the float16 values)
SKIPPED = {"model", "checkpoints", "adapter"}  # weights: never committed, never sent back
# the packages the GPU image lacks (docs/measuring.md; device KINDS.md), pure Python
WHEELS = ["datasets", "dill", "multiprocess", "evaluate", "seqeval"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


def _study(config: Path):
    from fdapt_core.config.run import load_config
    from fdapt_core.study import load_study, run_config_path

    study, base = load_study(config)
    return study, load_config(run_config_path(study, base), study.set)


# ----------------------------------------------------------------------------- pack (here)

def pack_model(source: Path, dest: Path) -> dict:
    """The start model with its weights stored as float16, beside its config and tokenizer."""
    import torch
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and not f.name.endswith(".bin"):
            shutil.copy2(f, dest / f.name)
    tensors = load_file(source / "model.safetensors")
    half = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in tensors.items()}
    floats = [k for k, v in half.items() if v.is_floating_point()]
    if any(not torch.isfinite(half[k]).all() for k in floats):
        raise SystemExit(f"gpu_study pack: {source}: a weight is past float16's range")
    # each tensor's rounding error relative to its size; values below float16's smallest
    # subnormal (6e-8) become 0 and are counted
    worst = max(float((half[k].float() - tensors[k]).norm() / tensors[k].norm().clamp_min(
        1e-30)) for k in floats)
    flushed = sum(int(((half[k] == 0) & (tensors[k] != 0)).sum()) for k in floats)
    save_file(half, dest / "model.fp16.safetensors")
    return {"tensors": len(half), "largest_relative_l2_error": worst,
            "values_flushed_to_zero": flushed}


def widen_model(folder: Path) -> None:
    """float16 weights back to float32 (the dtype every run trains in) as model.safetensors."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.fp16.safetensors")
    save_file({k: v.to(torch.float32) if v.is_floating_point() else v
               for k, v in tensors.items()}, folder / "model.safetensors",
              metadata={"format": "pt", "note": "float32 of float16-rounded weights"})


def data_files(config: Path) -> list[tuple[Path, str]]:
    """(file on this machine, its path under the data folder) for the corpus and every task
    split the study reads."""
    from fdapt_core.downstream.tasks import named_task
    from fdapt_core.prepare import resolve_data_path

    study, cfg = _study(config)
    names = [cfg.data.path]
    for name in study.tasks:  # a probe (`chemprot:probe`) reads its task's files
        task = named_task(name, ROOT / "configs" / "tasks")
        names += [p for p in (task.train, task.dev, task.test) if p and p not in names]
    out = []
    for name in names:
        found = resolve_data_path(name)
        if not found.is_file():
            raise SystemExit(f"gpu_study pack: {name}: not found (set $FDAPT_DATA_DIR)")
        out.append((found, name))
    return out


def pack(config: Path) -> None:
    from fdapt_core.model import resolve_model_path

    study, cfg = _study(config)
    if PACK.exists():
        shutil.rmtree(PACK)
    report = {"model": cfg.model.name_or_path,
              **pack_model(Path(resolve_model_path(cfg.model.name_or_path)), MODEL)}
    with tarfile.open(PACK / "data.tar.xz", "w:xz") as tar:
        for found, name in data_files(config):
            tar.add(found, arcname=name)
    pins = [f"{n}=={metadata.version(n)}" for n in WHEELS]
    wheels = PACK / "wheels"
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    binary = [p for p in pins if not p.startswith("seqeval")]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--only-binary=:all:", "--python-version", "3.12", "--implementation",
                    "cp", *plat, "-d", str(wheels), *binary], check=True)
    # seqeval ships as a source distribution only: a pure-Python wheel built here
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                    *[p for p in pins if p.startswith("seqeval")]], check=True)
    size = sum(f.stat().st_size for f in PACK.rglob("*") if f.is_file())
    report |= {"wheels": pins, "bytes": size}
    (PACK / "pack.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"gpu_study pack: {PACK}/ holds {size / 2**20:.1f} MiB (limit 64 MiB with the "
          f"tree): the model as float16 (relative error at most "
          f"{report['largest_relative_l2_error']:.1e} a tensor, "
          f"{report['values_flushed_to_zero']} values flushed to 0), {len(pins)} wheels, "
          "the data")


# ----------------------------------------------------------------------------- run (there)

def keep(path: Path, root: Path) -> bool:
    """Whether a file of a study's folder goes back: records, outcomes and tables, never
    weights, nor a run cut off part-way (its folder has no finished record)."""
    rel = path.relative_to(root)
    if SKIPPED & set(rel.parts) or any(p.endswith(".tmp") for p in rel.parts):
        return False
    for parent in path.parents:  # the run folder holding it, if any
        if parent == root:
            return True
        rec = parent / "record.json"
        if (parent / "config.yaml").is_file() and rec.is_file():
            try:
                return json.loads(rec.read_text()).get("status") == "finished"
            except (OSError, ValueError):
                return False
    return True


def pack_records(study_out: Path, dest: Path) -> int:
    """Every record of the study's folder worth keeping, as one gzip tarball; the file count."""
    n = 0
    with tarfile.open(dest, "w:gz") as tar:
        for f in sorted(study_out.rglob("*")):
            if f.is_file() and keep(f, study_out):
                tar.add(f, arcname=str(f))
                n += 1
    return n


def run(config: Path, budget: float, out: Path, device: str = "cuda") -> int:
    study, _ = _study(config)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    data = PACK / "data"
    with tarfile.open(PACK / "data.tar.xz") as tar:
        tar.extractall(data, filter="data")
    start = []  # the packed start model, where the study's config names one
    if (MODEL / "model.fp16.safetensors").is_file():
        if not (MODEL / "model.safetensors").is_file():
            widen_model(MODEL)
        start = ["--set", f"model.name_or_path={MODEL}"]
    env = {**os.environ, "FDAPT_DATA_DIR": str(data.resolve()), "PYTHONUNBUFFERED": "1"}
    left = budget - (time.monotonic() - t0)
    log = out / "study.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "bench", "study", "--config",
                                 str(config), *start, "--device", device], cwd=ROOT, env=env,
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(left, 1))
        except subprocess.TimeoutExpired:  # the budget: stop it as a kill would, then keep
            os.killpg(proc.pid, signal.SIGTERM)  # what finished
            try:
                rc = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
            f.write(f"\ngpu_study: stopped at the budget of {budget:.0f} s\n")
    n = pack_records(Path(study.out), out / "records.tar.gz")
    print(f"gpu_study run: bench study exited {rc} after {time.monotonic() - t0:.0f} s; "
          f"{n} record files in {out / 'records.tar.gz'}; the log's end:")
    print("".join(io.open(log, errors="replace").readlines()[-15:]))
    return 0 if rc in (0, -signal.SIGTERM, -signal.SIGKILL, 143) else rc


# ----------------------------------------------------------------------------- unpack (here)

def unpack(tarball: Path, config: Path) -> None:
    """The records that came back, into the study's folder (nothing outside it is written)."""
    study, _ = _study(config)
    top = Path(study.out)
    with tarfile.open(tarball) as tar:
        members = tar.getmembers()
        bad = [m.name for m in members if not m.isfile()
               or top not in Path(m.name).parents or ".." in Path(m.name).parts]
        if bad:
            raise SystemExit(f"gpu_study unpack: {tarball}: {bad[0]} is not a file under {top}/")
        tar.extractall(ROOT, filter="data")
    print(f"gpu_study unpack: {len(members)} files into {top}/")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["pack", "run", "unpack"])
    ap.add_argument("tarball", nargs="?", type=Path, help="unpack: the records.tar.gz")
    ap.add_argument("--config", type=Path, default=Path("configs/study-gpu.yaml"))
    ap.add_argument("--budget", type=float, default=450.0,
                    help="run: seconds for the study (then it is stopped and packed)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-study-out")))
    ap.add_argument("--device", default="cuda", help="run: the fine-tuning device")
    args = ap.parse_args()
    os.chdir(ROOT)
    if args.step == "pack":
        pack(args.config)
    elif args.step == "run":
        return run(args.config, args.budget, args.out, args.device)
    else:
        if args.tarball is None:
            ap.error("unpack: name the records.tar.gz that came back")
        unpack(args.tarball, args.config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
