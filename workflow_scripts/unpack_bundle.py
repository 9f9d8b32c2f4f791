"""A file or model folder of a bundle, copied to its place under {results}
and checked against the bundle's manifest (``ldsbench.spec.bundles.unpack``)."""

import logging
from pathlib import Path

from ldsbench.spec.bundles import read_manifest, unpack

# Not runtime.jobs.start_job: copying needs no torch, whose import would cost
# more than the copy.
Path(snakemake.log[0]).parent.mkdir(parents=True, exist_ok=True)
logging.basicConfig(filename=snakemake.log[0], filemode="w", level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True)
unpack(snakemake.params.bundle, read_manifest(snakemake.params.bundle), snakemake.params.unit, snakemake.output[0])
logging.info("copied %s from bundle %s; its sha256 matches the manifest", snakemake.params.unit, snakemake.params.bundle)
