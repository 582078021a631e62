"""The run config's sections (data, partition, model, training, federation, freezing, …):
one dataclass each, every field with its help and its allowed values."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .build import opt
from ..data.partition import PARTITIONERS
from ..executors import EXECUTORS
from ..fl.codecs import CODECS
from ..fl.strategies import STRATEGIES, FedAdam, FedAvgM, FedProx
from ..freeze.allocation import POLICIES
from ..presets import PRESETS


@dataclass
class SyntheticConfig:
    """The offline synthetic corpus (generated in code; not real text)."""

    n_docs: int = opt(600, "number of synthetic documents", min=2)
    n_topics: int = opt(6, "number of synthetic topics (each with its own vocabulary)", min=1, max=8)
    seed: int = opt(0, "seed of the synthetic generator")


@dataclass
class DataConfig:
    """Where the domain corpus comes from and how it is cut into training blocks."""

    source: str = opt("synthetic", "corpus reader",
                      choices=("synthetic", "text", "jsonl", "hf_disk", "hf_hub"))
    path: Optional[str] = opt(None, "file or folder (text, jsonl, hf_disk) or hub id (hf_hub); "
                              "a relative path is tried against the working directory, then "
                              "$FDAPT_DATA_DIR, then ../shared/data beside the project")
    text_per: str = opt("line", "text source: one document per line or per file",
                        choices=("line", "file"))
    text_fields: list[str] = opt(None, "fields joined (newline) into a document's text",
                                 factory=lambda: ["text"])
    id_field: Optional[str] = opt(None, "field holding a document id (default: line number)")
    key_field: Optional[str] = opt(None, "field holding a label used by by_key / dirichlet "
                                   "partitions (e.g. category)")
    split: str = opt("train", "split of a `datasets` dataset")
    max_doc_chars: int = opt(2_000_000, "longest document accepted, in characters (a larger "
                             "one is taken for a broken file: a missing line break)", min=1)
    max_docs: Optional[int] = opt(None, "use a seeded sample of N documents (kept in file "
                                   "order)", min=2)
    val_fraction: float = opt(0.05, "share of documents held out for MLM evaluation "
                              "(seeded, before partitioning)", min=0.0, max=0.5)
    max_seq_length: int = opt(128, "tokens per training block (texts are concatenated and "
                              "chunked, as run_mlm's group_texts)", min=8, max=8192)
    synthetic: SyntheticConfig = opt(None, "synthetic corpus settings", factory=SyntheticConfig)


@dataclass
class PartitionConfig:
    """How the training documents are dealt to clients."""

    method: str = opt("iid", "partition rule",
                      choices=PARTITIONERS)
    alpha: float = opt(0.5, "Dirichlet concentration (dirichlet only)", min=1e-6)
    shuffle: bool = opt(True, "iid: shuffle documents before cutting equal chunks "
                        "(corpora are often stored sorted by topic)")


@dataclass
class ModelConfig:
    """The starting model and its tokenizer."""

    preset: Optional[str] = opt("tiny", "architecture preset, random init, with a WordPiece "
                                "tokenizer trained on the corpus (null to load name_or_path): "
                                "DistilBERT shapes tiny, small, distilbert-base; decoders "
                                "gpt2-tiny, llama-tiny, llama-small",
                                choices=tuple(PRESETS))
    objective: str = opt("auto", "pre-training objective: auto = the model's own (MLM for an "
                         "encoder, next-token CLM for a decoder), or mlm / clm",
                         choices=("auto", "mlm", "clm"))
    name_or_path: Optional[str] = opt(None, "hub id, local folder, or package:<module> for a "
                                      "model folder shipped in a Python package")
    vocab_size: int = opt(4096, "vocabulary size of the tokenizer trained for a preset", min=128)
    trust_remote_code: bool = opt(False, "allow model code from the model folder (off: safe)")
    dropout: Optional[float] = opt(None, "set every dropout probability of the model to this "
                                   "(null: the model's own); 0 makes a data-parallel step "
                                   "equal to the single-process one", min=0.0, max=0.9)


@dataclass
class TrainConfig:
    """Local training (each client's loop, and the central trainer)."""

    batch_size: int = opt(8, "sequences per step", min=1)
    lr: float = opt(5e-5, "AdamW learning rate", min=0.0)
    weight_decay: float = opt(0.0, "AdamW weight decay", min=0.0)
    warmup_steps: int = opt(0, "linear warm-up steps of the schedule", min=0)
    schedule: str = opt("linear", "learning-rate schedule (transformers' get_scheduler): "
                        "linear decay to 0, constant, or cosine to 0, each after "
                        "warmup_steps of linear warm-up from 0", choices=("linear", "constant",
                                                                          "cosine"))
    max_grad_norm: float = opt(1.0, "gradient clipping norm (0 disables)", min=0.0)
    mlm_probability: float = opt(0.15, "share of tokens masked", min=0.01, max=0.9)
    local_epochs: int = opt(1, "passes over a client's data per round", min=1)
    max_local_steps: Optional[int] = opt(None, "cap on a client's steps per round", min=1)
    optimizer_reset: str = opt("round", "fresh AdamW + schedule every round (the study) or "
                               "each client's optimizer persisted across rounds (AdamW's "
                               "state kept per parameter name: a parameter frozen for a "
                               "round resumes the moments it left with)",
                               choices=("round", "persist"))
    precision: str = opt("auto", "auto = bf16 autocast on CUDA, fp32 on CPU",
                         choices=("auto", "fp32", "bf16"))
    device: str = opt("auto", "auto, cpu, cuda or cuda:N")
    threads: Optional[int] = opt(None, "CPU threads for torch (default: the host's cores); "
                                 "results are bit-identical at the same thread count, and a "
                                 "resumed run keeps the count it started with", min=1)
    sparse_head: bool = opt(True, "MLM: apply the LM head only at the masked positions (the "
                            "loss and gradients of the dense head, at a fraction of its "
                            "cost); next-token: the head and its loss a chunk of rows at a "
                            "time (the whole batch's float32 logits never held); false: "
                            "at every position at once, as HF's models do")
    compile: bool = opt(False, "torch.compile the model's training forward (on CUDA it cuts "
                        "kernel launches; each new frozen set compiles once, so a "
                        "per-round freeze policy compiles every round)")


# the server learning rate each optimizing strategy takes when fl.server_lr is null
_SERVER_LRS = ", ".join(f"{name} {cls.default_server_lr:g}" for name, cls in STRATEGIES.items()
                        if hasattr(cls, "default_server_lr"))


@dataclass
class FLConfig:
    """The federation: clients, rounds, sampling and aggregation."""

    clients: int = opt(4, "number of clients K", min=1)
    rounds: int = opt(5, "federated rounds (central: the same number of evaluation points)",
                      min=1)
    client_fraction: float = opt(1.0, "share of clients sampled each round (seeded)",
                                 min=1e-6, max=1.0)
    weighting: str = opt("batches", "FedAvg weights: training batches (the study), tokens, "
                         "or uniform", choices=("batches", "tokens", "uniform"))
    send_frozen: bool = opt(False, "clients upload unchanged frozen blocks too (the study's "
                            "code did; it changes nothing but the traffic)")
    frozen_aggregation: str = opt("global", "for a parameter a client did not send: count the "
                                  "server's copy in its place (global, the study's arithmetic) "
                                  "or average over senders only", choices=("global", "senders"))
    strategy: str = opt("fedavg", "server strategy (default fedavg): fedprox adds a proximal "
                        "term to the clients' loss; fedavgm, fedadam, fedyogi step a server "
                        "optimizer on the mean change (Reddi et al. 2021); diloco a Nesterov "
                        "one (Douillard et al. 2023: with train.max_local_steps, the "
                        "low-communication baseline)",
                        choices=tuple(STRATEGIES))
    prox_mu: float = opt(FedProx.default_mu, "fedprox: mu of the proximal term "
                         "(mu/2)·||w − w_global||² (0 = fedavg)", min=0.0)
    server_lr: Optional[float] = opt(None, "fedavgm, fedadam, fedyogi, diloco: server learning "
                                     "rate (null = the strategy's own: " + _SERVER_LRS + ")",
                                     min=0.0)
    server_momentum: float = opt(FedAvgM.default_momentum, "fedavgm: server momentum beta; "
                                 "diloco: its Nesterov momentum", min=0.0, max=1.0)
    server_beta1: float = opt(FedAdam.default_beta1, "fedadam, fedyogi: first-moment decay "
                              "beta1", min=0.0, max=1.0)
    server_beta2: float = opt(FedAdam.default_beta2, "fedadam, fedyogi: second-moment decay "
                              "beta2", min=0.0, max=1.0)
    server_tau: float = opt(FedAdam.default_tau, "fedadam, fedyogi: adaptivity tau, added to "
                            "sqrt(v)", min=1e-12)
    upload_codec: str = opt("none", "how a client's upload is encoded: none (the weights), "
                            "bf16 / fp16 (the change in 16 bits), int8 (the change, one scale "
                            "per tensor), topk (the largest fl.topk_fraction of the change, "
                            "with per-client error feedback); methods ending in -<codec> set it",
                            choices=CODECS)
    topk_fraction: float = opt(0.01, "topk: share of each tensor's entries sent (default "
                               "0.01)", min=1e-6, max=1.0)


@dataclass
class FreezeConfig:
    """Which transformer blocks ffdapt clients freeze."""

    policy: str = opt("paper", "paper = the study's allocation by data share; bottom = "
                      "embeddings + first k blocks; none; progressive = a trainable window "
                      "moving up one block a round; random = k seeded random blocks per client "
                      "and round; budget = the smallest bottom set meeting a FLOP-saving target "
                      "per client", choices=POLICIES)
    k: int = opt(2, "bottom, random: blocks frozen", min=0)
    embeddings: bool = opt(True, "bottom: also freeze the embeddings (and so the tied "
                           "output projection); progressive: freeze them whenever block 0 is "
                           "frozen; budget: allow candidates with the embeddings frozen")
    min_blocks: int = opt(1, "paper: fewest blocks a client freezes", min=0)
    max_blocks: int = opt(4, "paper: most blocks a client freezes", min=0)
    window: int = opt(2, "progressive: trainable blocks per round; round r trains blocks "
                      "r … r+window-1", min=1)
    wrap: bool = opt(False, "progressive: past the top the window wraps to block 0 (false: "
                     "it stays on the top blocks)")
    target_saving: float = opt(0.25, "budget: mean share of training FLOPs saved per client; "
                               "client i aims at target_saving × n_i·K/Σn (bigger clients save "
                               "more), clamped to what freezing can reach", min=0.0, max=1.0)


@dataclass
class PeftConfig:
    """Parameter-efficient clients through peft: with LoRA only the adapters train, travel and
    are averaged (A and B separately, not the product B·A); the base model stays as it was."""

    method: str = opt("none", "none = every parameter trains (full fine-tuning); lora = "
                      "low-rank adapters on target_modules (methods ending in -lora set it)",
                      choices=("none", "lora"))
    r: int = opt(8, "LoRA rank", min=1)
    alpha: float = opt(16.0, "LoRA alpha: the adapter's output is scaled by alpha / r", min=0.0)
    dropout: float = opt(0.0, "dropout on the adapters' input", min=0.0, max=0.9)
    target_modules: Optional[list[str]] = opt(None, "module names that get adapters (null: "
                                              "peft's default for the family: query/value "
                                              "projections, e.g. Llama q_proj, v_proj; GPT-2 "
                                              "c_attn; BERT query, value; DistilBERT q_lin, "
                                              "v_lin)")


@dataclass
class NetworkConfig:
    """The clients' links, for projecting round times and time to a target loss (compute as
    measured + transfer at these rates; the slowest client gates a round). A projection, not
    a simulation: left out of the config hash, so changing it needs no new training."""

    up_mbps: float = opt(100.0, "each client's uplink, Mbit/s (default 100: a typical "
                         "cross-silo institutional link)", min=1e-3)
    down_mbps: float = opt(100.0, "each client's downlink, Mbit/s (default 100)", min=1e-3)
    latency_ms: float = opt(20.0, "one-way latency per message, ms (default 20)", min=0.0)
    heterogeneity: float = opt(0.0, "sigma of a seeded log-normal factor on each client's "
                               "bandwidths (0: every client alike; 1: about a tenfold spread)",
                               min=0.0)
    seed: int = opt(0, "seed of the per-client bandwidth factors")


@dataclass
class ReportConfig:
    """How tables read the runs (left out of the config hash)."""

    target_loss: Optional[float] = opt(None, "time to target: the held-out loss to reach "
                                       "(null: the fdapt run's final loss)", min=0.0)


@dataclass
class CentralConfig:
    """The central baseline: one trainer on the union of the clients' text."""

    budget: str = opt("match", "match = as many training sequences (so tokens) per round as "
                      "fdapt's clients, in full batches; epochs = one pass over the union "
                      "per round",
                      choices=("match", "epochs"))


@dataclass
class EvalConfig:
    """Held-out MLM evaluation after every round, with fixed masks."""

    max_blocks: int = opt(128, "held-out blocks evaluated", min=1)
    batch_size: int = opt(32, "evaluation batch size", min=1)


@dataclass
class FaultsConfig:
    """Client faults, injected (seeded) and screened for at aggregation."""

    dropout: float = opt(0.0, "probability that a sampled client drops out of a round",
                         min=0.0, max=1.0)
    corrupt: float = opt(0.0, "probability that a client returns a corrupted update",
                         min=0.0, max=1.0)
    corrupt_kinds: list[str] = opt(None, "corruptions drawn from: nan, inf, scale (the update "
                                   "times corrupt_scale)", factory=lambda: ["nan", "inf",
                                                                            "scale"])
    corrupt_scale: float = opt(100.0, "the factor of a `scale` corruption", min=1.0)
    max_norm_ratio: Optional[float] = opt(None, "reject an update whose norm exceeds this many "
                                          "times the median of recently accepted ones, e.g. 10 "
                                          "(null: no bound, the study's FedAvg); non-finite "
                                          "updates are always rejected", min=1.0)
    min_clients: int = opt(1, "fewer valid updates in a round: keep the previous global "
                           "model", min=1)


@dataclass
class ProfileConfig:
    """What is measured beside training."""

    count_flops: bool = opt(True, "count training FLOPs with FlopCounterMode (one extra "
                            "forward + backward per distinct step shape and frozen set, "
                            "outside the timed loop)")
    peak_tflops: Optional[float] = opt(None, "accelerator peak (TFLOP/s) for model FLOPs "
                                       "utilisation; null: measured once with a large bf16 "
                                       "matrix product (CUDA only)", min=1e-3)


@dataclass
class DistConfig:
    """How the run is spread over processes (torch.distributed); results do not depend on it
    (up to float summation order), except dropout masks when ranks_per_client > 1."""

    executor: str = opt("sequential", "; ".join(
        f"{e.name} = {e.help}" + (f" (the {e.extra} extra)" if e.extra else "")
        for e in EXECUTORS.values()), choices=tuple(EXECUTORS))
    ranks_per_client: int = opt(1, "G: ranks that train one client together, data-parallel; "
                                "the world is cut into world/G groups (G = world: every rank "
                                "on one client at a time)", min=1)
    engine: str = opt("torch", "the group's trainer: torch (plain loop, gradients all-reduced) "
                      "or deepspeed (a ZeRO engine built once per process)",
                      choices=("torch", "deepspeed"))
    deepspeed_config: str = opt("configs/deepspeed/zero2.json", "DeepSpeed JSON config "
                                "(zero_optimization.stage 1, 2 or 3) for engine: deepspeed")
    timeout_s: int = opt(300, "a collective that waits longer than this fails the run "
                         "(a rank that hangs or dies on another host)", min=10)



@dataclass
class TrackingConfig:
    """Experiment tracking (fdapt_core/tracking.py): off unless backends are named; offline."""

    backends: list[str] = opt(None, "where each run logs its config, rounds and totals: "
                              "tensorboard (event files), mlflow (a local SQLite store); [] "
                              "none (`--report-to` sets it)", factory=list)
    dir: Optional[str] = opt(None, "the tracking data's folder; null: <output_dir>/tracking")
    mlflow_uri: Optional[str] = opt(None, "MLflow tracking URI; null: "
                                    "sqlite:///<dir>/mlflow.db (offline)")
