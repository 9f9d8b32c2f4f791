# Start-up guards: checks that stop a run before any job starts.


def refuse_over_budget():
    """Stop before any job starts if a job is estimated above its budget."""
    lines = over_budget(list(ESTIMATES.values()), BUDGET_BYTES, BUDGET_SETTING)
    if lines:
        raise WorkflowError("estimated peak memory exceeds the budget (see `snakemake plan`):\n  " + "\n  ".join(lines))


# `snakemake rescore` needs the models, queries and ground truth on disk.
RESCORE_INPUTS = [f"{R}/data/train.npz", f"{R}/subsets.parquet", f"{R}/models/full", f"{R}/queries/queries.npz"]
RESCORE_INPUTS += [f"{R}/ground_truth/{m}.parquet" for m in MEASUREMENTS]
if any(needs(m, "trajectory") for m in config["methods"].values()):
    RESCORE_INPUTS.append(f"{R}/models/full_trajectory")
if LATENT:
    RESCORE_INPUTS += [f"{PIXELS}/train.npz", QUERY_IMAGES]
# In bundle mode the bundle's copies are jobs of their own (rules/bundle.smk).
if RESCORE and BUNDLE is None and not all(os.path.exists(path) for path in RESCORE_INPUTS):
    missing = [path for path in RESCORE_INPUTS if not os.path.exists(path)]
    raise WorkflowError(f"`snakemake rescore` scores the models and ground truth on disk, but {', '.join(missing)} " "do not exist yet; run `snakemake` first.")


TRAINING_RULES = ("train_full_model", "train_full_model_seed", "train_subset_model", "train_removal_model")


def refuse_unconfirmed_retraining(dag):
    """Stop before any job starts if finished models would be retrained,
    unless the run says --config confirm_retraining=true."""
    if config["confirm_retraining"]:
        return
    changes = {}
    for job in dag.needrun_jobs():
        # Forced jobs were asked for: --forcerun, or a killed training that
        # --rerun-incomplete reruns (Snakemake never recorded it as finished,
        # even if the kill came after its model folder was renamed into place).
        if job.rule.name in TRAINING_RULES and not dag.reason(job).forced:
            changed = existing_model_changes(job.output[0], job.params.model, job.params.training)
            if changed is not None:
                changes[job.output[0]] = changed
    if changes:
        raise WorkflowError(retraining_report(changes))


def refuse_replacing_bundle(dag):
    """Stop before any job starts if `snakemake bundle` would replace an
    existing bundle by one with other files (a bundle may have been shared)."""
    destination = Path(f"{R}/bundle")
    jobs = [job for job in dag.needrun_jobs() if job.rule.name == "bundle"]
    if not jobs or not destination.exists():
        return
    rebuilt = {str(path) for job in dag.needrun_jobs() if job.rule.name != "bundle" for path in job.output}
    try:
        if rebuilt & set(map(str, jobs[0].input)):
            raise BundleError("its inputs would be rebuilt first")
        old = read_manifest(destination)["files"]
        changed = changed_files(old, list_files(R, BUNDLE_CONTENTS))
    except BundleError as error:
        raise WorkflowError(f"{destination} exists and `snakemake bundle` would replace it ({error}); move or delete it first")
    if changed:
        raise WorkflowError(
            f"{destination} exists and `snakemake bundle` would replace it with other files ({len(changed)} differ, e.g. "
            f"{', '.join(changed[:3])}); move or delete it first"
        )
