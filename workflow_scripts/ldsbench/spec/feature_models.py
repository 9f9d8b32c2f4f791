"""The check of a similarity method's feature-model file (torch-free): the
archive formats a local image encoder can come in, and a clear error for the
ones that need their model's Python code."""

from __future__ import annotations

import zipfile
from pathlib import Path


class FeatureModelError(ValueError):
    """The feature model file is missing or not a loadable model archive."""


HOW_TO_EXPORT = (
    "Nothing is downloaded: produce the file on a machine that has the model's weights, "
    "with torch.jit.save(torch.jit.trace(encoder.eval(), example), path) "
    "(or torch.export.save(torch.export.export(encoder.eval(), (example,), dynamic_shapes=...), path)), "
    "where example is a float tensor [B, 3, S, S] and encoder's forward returns the image features [B, F], "
    "then copy it here and give its local path."
)


def archive_format(path: Path) -> str:
    """``torchscript`` or ``export``, from the zip archive's member names."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        raise FeatureModelError(
            f"feature model {path}: not a TorchScript file (not a readable zip archive: {error}; a truncated copy or a file in another format). {HOW_TO_EXPORT}"
        ) from None
    members = {name.split("/", 1)[-1] for name in names}
    if "constants.pkl" in members and any(m.startswith("code/") for m in members):
        return "torchscript"
    if "archive_format" in members:
        return "export"
    detail = (
        "it looks like a torch.save checkpoint (a state dict or a pickled module), which needs the model's Python code to load"
        if "data.pkl" in members
        else "a zip archive without TorchScript's code/ and constants.pkl"
    )
    raise FeatureModelError(f"feature model {path}: not a TorchScript file ({detail}). {HOW_TO_EXPORT}")


def check_feature_model_path(path) -> Path:
    """Cheap check, without loading: ``path`` is a TorchScript (or
    ``torch.export``) archive. Returns the resolved path; raises
    ``FeatureModelError`` naming the path otherwise."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise FeatureModelError(f"feature model {resolved}: no such file. {HOW_TO_EXPORT}")
    if not resolved.is_file():
        raise FeatureModelError(f"feature model {resolved}: not a file. {HOW_TO_EXPORT}")
    archive_format(resolved)
    return resolved
