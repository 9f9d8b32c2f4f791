import os
import re
import sys
from dataclasses import asdict
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

# The package lives next to the step scripts; importable without installing.
sys.path.insert(0, str(Path(workflow.basedir) / "workflow_scripts"))

# Only torch-free modules: parsing the workflow must not import torch.
from ldsbench.planning.plan import CALIBRATION_SECONDS, cached_footprint, job_budget, measurement_batch, method_passes, over_budget, rule_estimates
from ldsbench.runtime.code_versions import content_hash, module_closure
from ldsbench.runtime.device_slots import discover_devices
from ldsbench.spec.bundles import BundleError, bundle_config, bundle_contents, changed_files, entries, list_files, missing_inputs, read_manifest, verify_bundle
from ldsbench.spec.config import ConfigError, validate_config
from ldsbench.spec.curvature_keys import curvature_fits, curvature_key
from ldsbench.spec.feature_keys import FEATURE_KEY_PATTERN, feature_key, full_model_name
from ldsbench.spec.network_passes import NetworkPasses, scoring_precision
from ldsbench.spec.measurement_types import measurement_gradient_settings, orientation_of
from ldsbench.spec.method_types import (
    default_value,
    feature_sets,
    hyperparameter_name,
    method_code_files,
    method_input_files,
    method_type,
    needs,
    scorer_module,
    training_feature_sets,
)
from ldsbench.spec.protection import existing_model_changes, retraining_report
from ldsbench.spec.training_runs import ALL_DATA, RANDOM_CONTROL

# Bundle mode (docs/bundles.md): score against a benchmark trained and
# measured elsewhere. The bundle's protocol sections replace the user's, and
# its files are checked before any job, once, in the main process (jobs that
# parse the workflow again only read its config).
BUNDLE, BUNDLE_MANIFEST = config.get("bundle"), None
if BUNDLE is not None:
    # Relative to the working directory (--directory); jobs get it absolute.
    BUNDLE = os.path.abspath(BUNDLE)
    try:
        BUNDLE_MANIFEST = verify_bundle(BUNDLE) if workflow.is_main_process else read_manifest(BUNDLE)
    except BundleError as error:
        raise WorkflowError(str(error))
    try:
        # The receiver's own settings, defaults filled, to say which the bundle's replace.
        yours = validate_config(config)
    except ConfigError:
        yours = None
    config, replaced = bundle_config(config, BUNDLE_MANIFEST, yours)
    if workflow.is_main_process:
        logger.info(f"bundle {BUNDLE}: every file verified; the protocol's settings are the bundle's (they replaced yours in: {', '.join(replaced) or 'none'})")

config = validate_config(config)
if BUNDLE is not None and missing_inputs(config, BUNDLE_MANIFEST):
    raise WorkflowError(f"bundle {BUNDLE} does not carry what the configured methods read: {'; '.join(missing_inputs(config, BUNDLE_MANIFEST))}")

R = config["results"]
M = config["benchmark"]["subsets"]
K = config["benchmark"]["seeds"]
METHODS = list(config["methods"])
MEASUREMENTS = list(config["measurements"])
# Jobs that handle every measurement take them in name order, so that
# reordering the config (the order of tables and figures) reruns nothing.
MEASURED = sorted(MEASUREMENTS)
THREADS = config["runtime"]["threads_per_job"]
# How training and measurement jobs run the network: the precision alone
# ("fp32") unless runtime.compile or runtime.channels_last is on, so a folder
# that uses neither keeps its rule parameters (ldsbench.spec.network_passes).
NETWORK_PASSES = NetworkPasses.from_runtime(config["runtime"]).key
# Jobs that take gradients for scoring run eager at this precision.
SCORING_PRECISION = scoring_precision(config["runtime"])
# GPU rules declare one gpu (Snakemake counts it; the job picks its device
# through a slot, see ldsbench.runtime.device_slots); with device cpu they need none.
GPUS_PER_JOB = 0 if config["runtime"]["device"] == "cpu" else 1
PACKAGE = Path(workflow.basedir) / "workflow_scripts" / "ldsbench"
STEPS = "../workflow_scripts"
CONDA_ENV = "../envs/ldsbench.yaml"

# Latent diffusion (model.vae): prepare_images writes the images to
# data/pixels/ and encode_latents writes their latents to data/, which every
# later rule reads as its data. Figures and the removal branch's image
# distances use images: the training images, and the queries decoded
# (generated) or as they were (held-out), in QUERY_IMAGES.
VAE = config["model"].get("vae")
LATENT = VAE is not None
PIXELS = f"{R}/data/pixels" if LATENT else f"{R}/data"
QUERY_IMAGES = f"{R}/queries/images.npz" if LATENT else f"{R}/queries/queries.npz"
# What training and its provenance see of the model: the VAE's settings
# decide the data (and its hash), not the UNet. Same key order as
# config["model"], so that pixel runs keep their params.
UNET_MODEL = {key: value for key, value in config["model"].items() if key != "vae"}

# Each training rule sees only the settings that affect it, so that changing
# subset_steps does not retrain the full model (and everything after it).
FULL_TRAINING = {k: v for k, v in config["training"].items() if k != "subset_steps"}
SUBSET_TRAINING = {k: v for k, v in config["training"].items() if k != "steps"}

# Retraining without the top influences; off without removal queries.
REMOVAL = config["removal"]
REMOVAL_ON = bool(REMOVAL["queries"])
REMOVAL_RANKERS = [*REMOVAL["methods"], RANDOM_CONTROL] if REMOVAL_ON else []
# Fractions appear in paths as %g labels ("0.02").
REMOVAL_FRACTIONS = {f"{f:g}": f for f in REMOVAL["fractions"]}
GRID_MEASUREMENT = config["report"]["grid_measurement"]
# Curvature factors are shared by every influence method with the same
# curvature settings but kind (K-FAC and EK-FAC share one fit): the file
# name is a hash of those settings.
CURVATURES = curvature_fits(config["methods"])
# Projected training features are shared the same way by every method that
# reads the same set (TRAK, D-TRAK, ensemble members, Journey-TRAK).
FEATURE_SETS = feature_sets(config["methods"])

# Memory: every GPU-capable rule declares its estimated peak (mem_mb), from
# the same formulas the jobs use to size their chunks (ldsbench.planning.plan,
# ldsbench.planning.memory). The model's sizes are measured once and cached.
JOB_DEVICE = "cpu" if config["runtime"]["device"] == "cpu" else ("cuda" if config["runtime"]["device"] == "cuda" or discover_devices() else "cpu")
BUDGET_BYTES, BUDGET_SETTING = job_budget(config["runtime"], JOB_DEVICE)
ESTIMATES = {row.rule: row for row in rule_estimates(config, cached_footprint(config["model"]["unet"], f"{R}/.plan"), BUDGET_BYTES, BUDGET_SETTING)}


def job_mem_mb(key):
    """Estimated peak of a job of rule (or score_method[method]) `key`, in MB."""
    return max(1, int(ESTIMATES[key].peak_bytes / 1e6))


wildcard_constraints:
    subset=r"\d+",
    seed=r"\d+",
    # Only configured names, so that a method's file is never read as another wildcard.
    method="|".join(re.escape(name) for name in METHODS),
    measurement="|".join(re.escape(name) for name in MEASUREMENTS),
    curvature=r"kronecker-[0-9a-f]+",
    features=FEATURE_KEY_PATTERN,
    ranker=r"[A-Za-z][A-Za-z0-9_-]*",
    query=r"\d+",
    fraction=r"[0-9][0-9.e-]*",


def code_version(step, *modules, files=()):
    """Code version of a stage that follows code edits (a param, so Snakemake
    reruns the stage when it changes): the content hash of its step script and
    of the package modules ``modules`` (dotted, under ``ldsbench``) with every
    package module they import, transitively (``ldsbench.runtime.code_versions``).
    Stages that train or measure carry none: code edits never retrain by
    themselves (``--forcerun`` does), and Snakemake's own trigger, a step
    script's modification time, is off (``rerun-triggers`` in the profiles).
    ``files``: files outside the package that decide the stage too (an
    external method's own modules)."""
    return content_hash([Path(workflow.basedir) / "workflow_scripts" / step, *(PACKAGE / f for f in module_closure(*modules)), *files])


def scoring_code_version(wildcards):
    """Code version of a method's scoring job: the step script, the code of
    its type (``scorer_module``) and, for an external method, its own file
    and the modules of its folder it imports, so that editing one method
    rescores that method alone."""
    method = config["methods"][wildcards.method]
    return code_version("score_method.py", "runtime.provenance", scorer_module(method["type"]), files=method_code_files(method))


# Stages that feed a training follow no code edit, like training itself:
# each label below is the content hash of the stage's code when it last
# changed. `--forcerun <rule>` reruns one on purpose (and then stops at the
# retraining guard): the latent encoding (encode_latents, decode_queries) and
# the removal sets (removal_set), which decide what the removal models train on.
LATENT_CODE_VERSION = "a96469ba18d3216c"
REMOVAL_SET_CODE_VERSION = "e5fa0b743070e7fe"


def method_curvature(wildcards):
    method = config["methods"][wildcards.method]
    if not needs(method, "curvature"):
        return []
    return f"{R}/curvature/{curvature_key(method['curvature'])}.pt"


def ensemble_models(wildcards):
    """A trak method's other full-data models (its `models` - 1 other seeds)."""
    method = config["methods"][wildcards.method]
    return [f"{R}/models/{full_model_name(s)}" for s in range(1, method.get("models", 1))] if needs(method, "ensemble") else []


def method_features(wildcards):
    """The projected training feature files a method's scoring job reads, one per model."""
    return [f"{R}/features/{feature_key(s)}.npy" for s in training_feature_sets(config["methods"][wildcards.method])]


def method_time_files(name):
    """Benchmark files of a method's scoring job and of the feature jobs it reads."""
    features = [f"{R}/benchmarks/features/{feature_key(s)}.tsv" for s in training_feature_sets(config["methods"][name])]
    return [f"{R}/benchmarks/scores/{name}.tsv", *features]


def method_settings(wildcards):
    """The method's config entry; a method that replays the generated
    queries' trajectories (Journey-TRAK) also depends on how they were sampled."""
    method = config["methods"][wildcards.method]
    if needs(method, "query_sampling"):
        return {**method, "query_sampling": config["queries"]}
    return method


def removal_scores(wildcards):
    if wildcards.ranker == RANDOM_CONTROL:
        return {}
    base = f"{R}/scores/{wildcards.ranker}/{REMOVAL['measurement']}"
    return {"scores": f"{base}.npy", "manifest": f"{base}.json"}


def vae_weights_file():
    """The VAE's weight file (config validation has checked that it exists)."""
    from ldsbench.data.latents import weights_file

    return weights_file(VAE["path"])


def removal_images(wildcards):
    """With latents, the decoded queries and the VAE, for the image distance
    of a regenerated query (computed between images, not latents)."""
    return {"images": QUERY_IMAGES, "vae_weights": str(vae_weights_file())} if LATENT else {}


def reference_model(wildcards):
    return f"{R}/models/{full_model_name(int(wildcards.seed))}"


def summary_outputs():
    return [
        f"{R}/lds_summary.parquet",
        f"{R}/lds_per_query.parquet",
        f"{R}/lds_sweep.parquet",
        f"{R}/lds_paired.parquet",
        f"{R}/lds_summary.png",
        f"{R}/lds_paired.png",
        f"{R}/lds_per_query.png",
        f"{R}/lds_vs_damping.png",
        f"{R}/lds_summary.md",
        f"{R}/attribution_grid.png",
    ]


def removal_measurements():
    return [
        f"{R}/removal/measurements/{ranker}/query_{q}/fraction_{label}/seed_{s}.parquet"
        for ranker in REMOVAL_RANKERS
        for q in REMOVAL["queries"]
        for label in REMOVAL_FRACTIONS
        for s in range(REMOVAL["seeds"])
    ]


def removal_outputs():
    if not REMOVAL_ON:
        return []
    return [f"{R}/removal_summary.parquet", f"{R}/removal_summary.md", f"{R}/removal.png"]


# `snakemake rescore`: scoring and LDS only. Snakemake reads the targets after
# this file, so the target is taken from the command line here.
# A run against a bundle is always one (it has nothing to retrain from).
RESCORE = "rescore" in sys.argv[1:] or BUNDLE is not None
# `snakemake plan` only writes the plan: it must show a plan that does not fit.
PLAN_ONLY = "plan" in sys.argv[1:]
