"""A SYNTHETIC, offline, domain-like corpus generated in code: not real text.

The default config and the fast tests need a corpus that is available everywhere (no files,
no network), is generated in well under a second, and still has the properties the benchmark's
partitioners and models care about. This module writes biomedical-*looking* documents from
templates; nothing in them is medical fact. Every document id says so (``synthetic-00012``).

What makes the text useful despite being synthetic:

* **Topics with distinct vocabularies.** Each topic (`TOPICS`) has its own hand-written terms
  (conditions, markers, treatments, anatomy, procedures) plus generated drug-like compounds
  (stem + suffix). Terms are drawn with a Zipf-like preference for the first ones listed, and
  about 10% of slots borrow a term from another topic, so topics are learnable but not
  perfectly separable. A document's `key` is its topic name.
* **Uneven topic sizes.** Topic ``i`` gets a share of documents proportional to ``1/(i+1)``,
  so quantity- and label-skew partitions have something to skew.
* **Varying text statistics.** Sentences per document are uniform in
  ``[min_sentences, max_sentences]``; each document also draws how often its sentences carry
  optional clauses (sentence length) and how steep its term preference is (distinct words), so
  partitions by tokens per sentence or by lexical diversity are meaningful.

Each document is a title-like first sentence followed by body sentences, all ending in ``.``.
Generation is deterministic: the same arguments give the same list, from a private
``random.Random(seed)``.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate

from fdapt_core.data.document import Document

__all__ = ["TOPICS", "generate"]

# Per topic: hand-written terms for each template slot (most frequent first) and the stems and
# suffixes whose products become extra, drug-like treatment names.
_LEXICON: dict[str, dict[str, tuple[str, ...]]] = {
    "cardiology": {
        "condition": ("heart failure", "atrial fibrillation", "myocardial infarction",
                      "hypertension", "cardiomyopathy", "angina pectoris", "aortic stenosis",
                      "ventricular tachycardia", "endocarditis", "pericarditis"),
        "marker": ("ejection fraction", "troponin", "blood pressure", "heart rate",
                   "LDL cholesterol", "QT interval", "natriuretic peptide"),
        "treatment": ("beta blockade", "anticoagulation", "angioplasty", "bypass grafting",
                      "statin"),
        "site": ("left ventricle", "coronary artery", "myocardium", "aortic valve", "atrium",
                 "pericardium"),
        "procedure": ("echocardiography", "coronary angiography", "electrocardiography",
                      "stress testing", "Holter monitoring"),
        "stem": ("cardi", "vaso", "coro", "angio"),
        "suffix": ("olol", "pril", "sartan", "dipine"),
    },
    "oncology": {
        "condition": ("breast carcinoma", "lymphoma", "melanoma", "metastatic disease",
                      "leukemia", "sarcoma", "adenocarcinoma", "neoplasia", "myeloma",
                      "squamous carcinoma"),
        "marker": ("tumor size", "overall survival", "carcinoembryonic antigen",
                   "prostate-specific antigen", "Ki-67 index", "remission rate"),
        "treatment": ("chemotherapy", "radiotherapy", "tamoxifen", "tumor resection",
                      "cisplatin"),
        "site": ("lymph nodes", "breast tissue", "bone marrow", "tumor margin",
                 "hepatic metastases"),
        "procedure": ("biopsy", "mammography", "computed tomography", "staging laparotomy",
                      "cytology"),
        "stem": ("onco", "carcino", "tumo", "neo"),
        "suffix": ("mab", "tinib", "platin", "taxel"),
    },
    "neurology": {
        "condition": ("epilepsy", "stroke", "multiple sclerosis", "Parkinson disease",
                      "migraine", "dementia", "peripheral neuropathy", "seizures",
                      "Alzheimer disease"),
        "marker": ("cognitive score", "seizure frequency", "nerve conduction velocity",
                   "infarct volume", "motor function", "cerebral blood flow"),
        "treatment": ("anticonvulsant therapy", "levodopa", "thrombolysis", "carbamazepine",
                      "deep brain stimulation"),
        "site": ("cerebral cortex", "hippocampus", "basal ganglia", "spinal cord",
                 "white matter", "cerebellum"),
        "procedure": ("magnetic resonance imaging", "electroencephalography", "lumbar puncture",
                      "neuropsychological testing", "Doppler sonography"),
        "stem": ("neuro", "cerebro", "myelo", "encephalo"),
        "suffix": ("azepam", "triptan", "racetam", "pentin"),
    },
    "infection": {
        "condition": ("sepsis", "pneumonia", "tuberculosis", "bacteremia", "meningitis",
                      "cellulitis", "HIV infection", "hepatitis", "osteomyelitis",
                      "urinary infection"),
        "marker": ("culture positivity", "fever", "leukocyte count", "viral load",
                   "C-reactive protein", "colony counts"),
        "treatment": ("antibiotic prophylaxis", "penicillin", "vancomycin", "gentamicin",
                      "antiviral therapy"),
        "site": ("bloodstream", "surgical wound", "bladder", "respiratory tract",
                 "cerebrospinal fluid"),
        "procedure": ("blood culture", "Gram staining", "serology", "polymerase chain reaction",
                      "susceptibility testing"),
        "stem": ("bacto", "myco", "strepto", "vira"),
        "suffix": ("cillin", "mycin", "floxacin", "cycline"),
    },
    "endocrinology": {
        "condition": ("diabetes mellitus", "hypothyroidism", "hyperthyroidism", "obesity",
                      "Cushing syndrome", "insulin resistance", "adrenal insufficiency",
                      "osteoporosis", "hyperparathyroidism"),
        "marker": ("glycated hemoglobin", "fasting glucose", "serum insulin", "thyroxine",
                   "cortisol", "body mass index", "thyrotropin"),
        "treatment": ("insulin", "metformin", "levothyroxine", "thyroidectomy",
                      "glucocorticoid replacement"),
        "site": ("pancreatic islets", "thyroid gland", "adrenal cortex", "pituitary",
                 "adipose tissue"),
        "procedure": ("glucose tolerance test", "thyroid scintigraphy", "hormone assay",
                      "dexamethasone suppression test"),
        "stem": ("gluco", "thyro", "insu", "adreno"),
        "suffix": ("gliptin", "glitazone", "formin", "glutide"),
    },
    "immunology": {
        "condition": ("rheumatoid arthritis", "systemic lupus erythematosus", "allergic rhinitis",
                      "psoriasis", "vasculitis", "transplant rejection", "anaphylaxis",
                      "immunodeficiency", "sarcoidosis"),
        "marker": ("antibody titers", "complement levels", "interleukin-6", "T-cell counts",
                   "immunoglobulin E", "autoantibodies"),
        "treatment": ("prednisone", "methotrexate", "cyclosporine", "plasmapheresis",
                      "immunoglobulin infusion"),
        "site": ("synovium", "lymphocytes", "thymus", "spleen", "germinal centers"),
        "procedure": ("flow cytometry", "skin prick testing", "ELISA", "immunofluorescence",
                      "HLA typing"),
        "stem": ("immuno", "lympho", "cyto", "inter"),
        "suffix": ("cept", "kinra", "limus", "zumab"),
    },
    "nephrology": {
        "condition": ("chronic kidney disease", "nephrotic syndrome", "glomerulonephritis",
                      "acute renal failure", "polycystic kidney disease", "nephrolithiasis",
                      "hyperkalemia", "renal artery stenosis"),
        "marker": ("creatinine clearance", "proteinuria", "glomerular filtration rate",
                   "serum potassium", "urea nitrogen"),
        "treatment": ("hemodialysis", "peritoneal dialysis", "kidney transplantation",
                      "loop diuretics", "phosphate binders"),
        "site": ("glomerulus", "renal tubules", "renal cortex", "collecting duct", "nephron"),
        "procedure": ("renal biopsy", "urinalysis", "renal ultrasonography",
                      "isotope renography"),
        "stem": ("nephro", "reno", "glomero", "uro"),
        "suffix": ("semide", "thiazide", "vaptan", "calcet"),
    },
    "pulmonology": {
        "condition": ("asthma", "chronic obstructive pulmonary disease", "pulmonary fibrosis",
                      "emphysema", "pulmonary embolism", "cystic fibrosis", "sleep apnea",
                      "bronchiectasis"),
        "marker": ("forced expiratory volume", "oxygen saturation", "vital capacity",
                   "arterial oxygen tension", "peak flow"),
        "treatment": ("inhaled steroids", "bronchodilators", "mechanical ventilation",
                      "oxygen therapy", "pulmonary rehabilitation"),
        "site": ("alveoli", "bronchi", "pleura", "lung parenchyma", "airway epithelium"),
        "procedure": ("spirometry", "bronchoscopy", "chest radiography",
                      "ventilation-perfusion scanning", "polysomnography"),
        "stem": ("pneumo", "broncho", "pulmo", "spiro"),
        "suffix": ("terol", "tropium", "lukast", "fylline"),
    },
}

TOPICS: tuple[str, ...] = tuple(_LEXICON)
"""Names of the available synthetic topics, in order; ``n_topics`` picks the first n."""

# Slots filled from the shared (topic-neutral) vocabulary; the template words themselves are
# the rest of the shared vocabulary.
_SHARED: dict[str, tuple[str, ...]] = {
    "change": ("increased", "decreased", "elevated", "reduced", "abnormal", "stable"),
    "effect": ("increased", "decreased", "reduced", "improved", "did not alter", "normalized"),
    "finding": ("thickening", "dilation", "lesions", "inflammation", "abnormalities", "edema"),
    "design": ("prospective", "retrospective", "randomized", "population-based", "case-control",
               "multicenter", "cross-sectional"),
    "outcome": ("mortality", "hospital admission", "quality of life", "recurrence",
                "complications", "length of stay"),
}

_TITLES: tuple[str, ...] = (
    "{treatment} for {condition}: a {design} study.",
    "{marker} and {condition} in {n} patients.",
    "Role of the {site} in {condition}.",
    "{procedure} in the assessment of {condition}.",
    "{condition} after {treatment}: {design} evidence.",
    "Effects of {treatment} on {marker} in {condition}.",
)

_SENTENCES: tuple[str, ...] = (
    "Patients with {condition} showed {change} {marker} after treatment with {treatment}.",
    "{treatment} {effect} {marker} in patients with {condition}.",
    "We assessed {marker} by {procedure} in {n} patients with {condition}.",
    "{procedure} revealed {finding} of the {site} in most cases.",
    "The incidence of {condition} was higher among patients receiving {treatment}.",
    "These findings suggest that {treatment} may improve {outcome} in {condition}.",
    "{marker} correlated with the severity of {condition} and with {finding} of the {site}.",
    "No significant difference in {marker} was observed between the {treatment} and "
    "control groups.",
    "In a {design} study of {n} patients, {condition} was associated with {change} {marker}.",
    "Involvement of the {site} was common in {condition} and was detected by {procedure}.",
    "Treatment with {treatment} reduced the risk of {outcome} during {months} months of "
    "follow-up.",
    "{condition} remains a major cause of morbidity.",
    "Further studies are needed.",
    "The mechanism by which {treatment} affects {marker} in the {site} is unclear.",
    "{finding} of the {site} predicted {outcome}.",
    "We reviewed the records of {n} patients with {condition} treated with {treatment}.",
)

_OPENERS: tuple[str, ...] = (
    "However,", "In addition,", "Overall,", "Notably,", "In contrast,", "Moreover,",
)
_CLAUSES: tuple[str, ...] = (
    ", compared with {n} matched controls",
    " at {months} months",
    " in the {design} cohort",
    " independent of age and sex",
    ", although the difference was not significant",
    " in patients with {condition}",
    " as measured by {procedure}",
)

_TOPIC_SLOTS = ("condition", "marker", "treatment", "site", "procedure")
_MAX_CLAUSES = 3  # optional clauses per sentence, each distinct
_CROSS_TOPIC = 0.10  # share of topic slots that borrow a term from another topic
_ZIPF_EXPONENTS = (0.8, 1.1, 1.4, 1.8)  # per-document steepness of the term preference
_SLOT = re.compile(r"\{(\w+)\}")


def generate(
    n_docs: int = 600,
    n_topics: int = 6,
    seed: int = 0,
    min_sentences: int = 3,
    max_sentences: int = 12,
) -> list[Document]:
    """Generate ``n_docs`` SYNTHETIC documents over the first ``n_topics`` of `TOPICS`.

    Documents come in shuffled order with ids ``synthetic-00000``, ``synthetic-00001``, … and
    ``key`` = topic name; each has between ``min_sentences`` and ``max_sentences`` sentences
    (the title counts as one). Raises ValueError for impossible arguments.
    """
    _check_args(n_docs, n_topics, min_sentences, max_sentences)
    rng = random.Random(seed)
    topics = TOPICS[:n_topics]
    keys = [t for t, size in zip(topics, _topic_sizes(n_docs, n_topics)) for _ in range(size)]
    rng.shuffle(keys)
    width = max(5, len(str(n_docs - 1)))
    return [
        Document(
            id=f"synthetic-{i:0{width}d}",
            text=_document_text(rng, topic, topics, min_sentences, max_sentences),
            key=topic,
        )
        for i, topic in enumerate(keys)
    ]


def _check_args(n_docs: int, n_topics: int, min_sentences: int, max_sentences: int) -> None:
    if n_docs < 1:
        raise ValueError(f"n_docs must be at least 1, got {n_docs}")
    if not 1 <= n_topics <= len(TOPICS):
        raise ValueError(
            f"n_topics must be between 1 and {len(TOPICS)} (the synthetic topics available: "
            f"{', '.join(TOPICS)}), got {n_topics}"
        )
    if not 1 <= min_sentences <= max_sentences:
        raise ValueError(
            "need 1 <= min_sentences <= max_sentences, "
            f"got min_sentences={min_sentences}, max_sentences={max_sentences}"
        )


def _topic_sizes(n_docs: int, n_topics: int) -> list[int]:
    """Documents per topic, Zipf-like (topic i gets a share ∝ 1/(i+1)), one each at least.

    Sizes are allocated exactly (largest remainder), not sampled, so small corpora still have
    every topic (when n_docs >= n_topics) and the skew does not depend on the seed.
    """
    sizes = [1 if i < n_docs else 0 for i in range(n_topics)]
    rest = n_docs - sum(sizes)
    weights = [1.0 / (i + 1) for i in range(n_topics)]
    quotas = [rest * w / sum(weights) for w in weights]
    sizes = [size + int(q) for size, q in zip(sizes, quotas)]
    by_remainder = sorted(range(n_topics), key=lambda i: int(quotas[i]) - quotas[i])
    for i in by_remainder[: n_docs - sum(sizes)]:
        sizes[i] += 1
    return sizes


def _document_text(
    rng: random.Random, topic: str, topics: tuple[str, ...], min_sent: int, max_sent: int
) -> str:
    """A title-like sentence and a body; this document's own style varies its statistics."""
    style = _Style(
        clause_rate=rng.uniform(0.05, 0.6),
        exponent=rng.choice(_ZIPF_EXPONENTS),
        topic=topic,
        others=tuple(t for t in topics if t != topic),
    )
    sentences = [_fill(rng, rng.choice(_TITLES), style)]
    for _ in range(rng.randint(min_sent, max_sent) - 1):
        sentences.append(_body_sentence(rng, style))
    return " ".join(sentences)


@dataclass(frozen=True, slots=True)
class _Style:
    """Per-document choices that vary sentence length and lexical diversity across documents."""

    clause_rate: float
    exponent: float
    topic: str
    others: tuple[str, ...]


def _body_sentence(rng: random.Random, style: _Style) -> str:
    template = rng.choice(_SENTENCES)
    if rng.random() < style.clause_rate:
        template = f"{rng.choice(_OPENERS)} {template[0].lower()}{template[1:]}"
    n_clauses = sum(rng.random() < style.clause_rate for _ in range(_MAX_CLAUSES))
    if n_clauses:
        template = template[:-1] + "".join(rng.sample(_CLAUSES, n_clauses)) + "."
    return _fill(rng, template, style)


def _fill(rng: random.Random, template: str, style: _Style) -> str:
    """Replace every ``{slot}`` independently, then capitalise the sentence."""
    text = _SLOT.sub(lambda match: _term(rng, match.group(1), style), template)
    return text[0].upper() + text[1:]


def _term(rng: random.Random, slot: str, style: _Style) -> str:
    if slot == "n":
        return str(rng.randint(12, 480))
    if slot == "months":
        return str(rng.choice((3, 6, 12, 18, 24, 36, 60)))
    if slot in _SHARED:
        return rng.choice(_SHARED[slot])
    topic = style.topic
    if style.others and rng.random() < _CROSS_TOPIC:
        topic = rng.choice(style.others)
    terms = _vocabulary(topic)[slot]
    return rng.choices(terms, cum_weights=_zipf_cumulative(len(terms), style.exponent))[0]


@lru_cache(maxsize=None)
def _vocabulary(topic: str) -> dict[str, tuple[str, ...]]:
    """A topic's terms per slot; treatments are extended with generated stem+suffix compounds.

    Compounds come after the hand-written names, so the frequent head of the Zipf distribution
    stays readable and the tail is long and topic-specific.
    """
    lexicon = _LEXICON[topic]
    vocabulary = {slot: lexicon[slot] for slot in _TOPIC_SLOTS}
    compounds = tuple(
        _compound(stem, suffix) for suffix in lexicon["suffix"] for stem in lexicon["stem"]
    )
    vocabulary["treatment"] = lexicon["treatment"] + compounds
    return vocabulary


def _compound(stem: str, suffix: str) -> str:
    """Join like drug names do: ``vaso`` + ``olol`` gives ``vasolol``, not ``vasoolol``."""
    vowels = "aeiouy"
    if stem[-1] in vowels and suffix[0] in vowels:
        stem = stem[:-1]
    return stem + suffix


@lru_cache(maxsize=None)
def _zipf_cumulative(n: int, exponent: float) -> tuple[float, ...]:
    """Cumulative weights ∝ 1/rank^exponent, cached since few (n, exponent) pairs occur."""
    return tuple(accumulate(1.0 / (rank**exponent) for rank in range(1, n + 1)))
