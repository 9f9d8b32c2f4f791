# LDS benchmark for training-data attribution in diffusion models.
# Stages: data -> subsets -> training -> queries -> measurements -> curvature
# -> scores per method (every measurement) -> LDS per method -> summary and
# figures; beside them, retraining without each method's top influences.
import os

# Snakemake (9.27) does not pass --replace-workflow-config on to cluster
# jobs; this variable, which the jobs inherit, does.
if workflow.config_settings.replace_workflow_config:
    os.environ.update(LDSBENCH_REPLACE_WORKFLOW_CONFIG="1")
if os.environ.get("LDSBENCH_REPLACE_WORKFLOW_CONFIG") != "1":

    # Anchored to this folder so that --directory elsewhere still finds it.
    configfile: os.path.join(workflow.basedir, "config.yaml")


include: "rules/common.smk"
include: "rules/guards.smk"


# `snakemake rescore` knows no rule that trains, samples queries or measures:
# it scores and computes LDS from the models and ground truth on disk, and
# can never schedule a retraining.
if not RESCORE:

    include: "rules/data.smk"
    include: "rules/train.smk"
    include: "rules/queries.smk"
    include: "rules/measure.smk"
    include: "rules/precision.smk"

    if REMOVAL_ON:

        include: "rules/removal.smk"


include: "rules/curvature.smk"
include: "rules/features.smk"
include: "rules/score.smk"
include: "rules/lds.smk"
include: "rules/figures.smk"
include: "rules/plan.smk"
include: "rules/bundle.smk"


report: "report/workflow.rst"


rule all:
    default_target: True
    input:
        summary_outputs(),
        removal_outputs(),


rule rescore:
    input:
        summary_outputs(),


onstart:
    if not PLAN_ONLY:
        refuse_over_budget()
    refuse_unconfirmed_retraining(workflow.dag)
    refuse_replacing_bundle(workflow.dag)
