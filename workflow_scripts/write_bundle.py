"""`snakemake bundle`: pack what scoring reads of the benchmark into
{results}/bundle/, with its manifest and card (``ldsbench.spec.bundles``)."""

import datetime
import os
import subprocess
import tomllib
from pathlib import Path

import pandas as pd

from ldsbench.runtime.fingerprints import benchmark_fingerprint, folder_provenance
from ldsbench.runtime.jobs import start_job
from ldsbench.spec.bundles import BundleContents, build_manifest, card_text, cost_rows, measured_times, write_bundle
from ldsbench.spec.method_types import CEILING

log = start_job(snakemake)
params, config = snakemake.params, snakemake.config
results, contents = Path(params.results), BundleContents(**{key: tuple(value) for key, value in params.contents.items()})
provenance = folder_provenance(results)
# A dataset the bundle does not carry is named by its settings and by the
# content hash of its training set, which the receiver's copy must match.
dataset = {key: value for key, value in config["dataset"].items() if key != "path"}
prepared = {path: {"dataset": dataset, "images_sha256": provenance["train_sha256"]} for path in contents.prepared}
author = config.get("bundle_author")
if author is None:
    git = subprocess.run(["git", "-C", params.basedir, "config", "user.name"], capture_output=True, text=True)
    author = git.stdout.strip() or None
made = {
    "package_version": tomllib.loads(Path(params.basedir, "pyproject.toml").read_text())["project"]["version"],
    "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "created_by": author,
    "command": os.environ.get("LDSBENCH_COMMAND", "snakemake bundle"),
}
summary = results / "lds_summary.parquet"
ceiling = []
if summary.exists():
    rows = pd.read_parquet(summary)
    ceiling = [(row.measurement, float(row.lds)) for row in rows[rows["method"] == CEILING].itertuples()]
cost = cost_rows(config, params.plan, measured_times(results / "benchmarks"))
manifest = write_bundle(
    results,
    snakemake.output[0],
    contents,
    lambda files: build_manifest(config, files, provenance, benchmark_fingerprint(provenance), prepared, made),
    lambda manifest: card_text(manifest, cost, ceiling),
)
log.info(
    "bundle %s: %s files, %.1f MB, fingerprint %s",
    snakemake.output[0],
    len(manifest["files"]),
    sum(f["size"] for f in manifest["files"].values()) / 1e6,
    manifest["benchmark_fingerprint"],
)
