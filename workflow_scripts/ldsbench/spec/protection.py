"""Protecting expensive results: a run that would retrain models which
already exist stops first and says which models and which settings changed.

Snakemake deletes a job's outputs before the job runs, so an unnoticed
change of a training setting would silently replace days of retraining.
"""

from __future__ import annotations

import json
from pathlib import Path

SHOWN = 5


def config_changes(old, new, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, as ``key: old -> new`` lines."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines = []
        for key in sorted(set(old) | set(new), key=str):
            lines += config_changes(old.get(key, "(unset)"), new.get(key, "(unset)"), f"{prefix}{key}.")
        return lines
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def existing_model_changes(model_dir, model_config: dict, training_config: dict) -> list[str] | None:
    """Settings that differ between the finished model in ``model_dir`` and the
    current config; None when there is no finished model there."""
    manifest_path = Path(model_dir) / "manifest.json"
    if not manifest_path.exists():
        return None
    recorded = json.loads(manifest_path.read_text()).get("config")
    if recorded is None:
        return ["(the model's manifest records no settings)"]
    current = json.loads(json.dumps({"model": model_config, "training": training_config}))
    return config_changes(recorded, current)


def retraining_report(changes: dict[str, list[str]]) -> str:
    """Message for a run that would retrain the finished models in ``changes``
    ({model folder: changed settings}); an empty list means the settings are
    unchanged and something else (code, inputs) triggers the retraining."""
    lines = [f"This run would retrain {len(changes)} finished model(s); their current weights would be deleted first."]
    for folder, changed in list(changes.items())[:SHOWN]:
        lines.append(f"  {folder}: " + ("; ".join(changed) if changed else "settings unchanged (code or inputs changed)"))
    if len(changes) > SHOWN:
        lines.append(f"  ... and {len(changes) - SHOWN} more")
    lines += [
        "Nothing was run. `snakemake -n` lists every job a run would start and why.",
        "To rescore methods with the models on disk, run `snakemake rescore`.",
    ]
    if not any(changes.values()):
        # Only code or inputs changed, as after an upgrade: rescoring first
        # lets the next run find the removal sets unchanged.
        lines.append(
            "Where only code changed (an upgrade), run `snakemake rescore` first: a plain run after it "
            "retrains no removal model whose removal set comes out the same."
        )
    lines += [
        "To retrain anyway, run again with `--config confirm_retraining=true`.",
    ]
    return "\n".join(lines)
