"""The method registry: every schema type has an entry and a scorer, each
type's code hash covers exactly the modules its scores depend on, and a new
method is one module plus one registry entry."""

from pathlib import Path

import pytest
import yaml

from ldsbench.runtime.code_versions import module_closure
from ldsbench.spec.method_types import METHOD_TYPES, MethodType, method_type, needs, scored_values, scorer, scorer_modules

ROOT = Path(__file__).resolve().parents[2]


def _schema_method_types() -> set[str]:
    schema = yaml.safe_load((ROOT / "schemas" / "config.schema.yaml").read_text())
    found = set()

    def walk(node):
        if isinstance(node, dict):
            if set(node.get("properties", {}).get("type", {})) == {"const"}:
                found.add(node["properties"]["type"]["const"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema["$defs"])
    return found


def test_every_schema_method_type_has_a_registry_entry_and_a_scorer():
    schema_types = _schema_method_types()
    assert set(METHOD_TYPES) <= schema_types, "every registered type is in the schema"
    for name in METHOD_TYPES:
        assert callable(scorer(name))


def test_closure_follows_relative_imports_transitively():
    # trak imports scoring, which imports gradients; and measurement, which imports likelihood.
    closure = set(module_closure("methods.trak"))
    expected = {"methods/trak.py", "attribution/scoring.py", "attribution/gradients.py", "measurement/estimators.py", "measurement/likelihood.py"}
    assert expected | {"attribution/projection.py"} <= closure
    # The registry decides no score: adding a method must not rescore the others.
    assert "methods/__init__.py" not in closure


def test_closure_follows_absolute_package_imports(tmp_path, monkeypatch):
    import ldsbench.runtime.code_versions as code_versions

    package = tmp_path / "pkg"
    (package / "methods").mkdir(parents=True)
    (package / "methods" / "__init__.py").write_text("")
    (package / "methods" / "toy.py").write_text("import numpy\nfrom ldsbench.helper import f\n\ndef g():\n    from ..other import h\n")
    (package / "helper.py").write_text("from . import leaf\n")
    (package / "leaf.py").write_text("")
    (package / "other.py").write_text("")
    monkeypatch.setattr(code_versions, "PACKAGE_DIR", package)
    assert module_closure("methods.toy") == ["helper.py", "leaf.py", "methods/toy.py", "other.py"]


def test_editing_one_method_type_does_not_rehash_unrelated_ones():
    assert "methods/das.py" not in scorer_modules("trak")
    assert "methods/das.py" not in scorer_modules("influence")
    assert "methods/tracin.py" not in scorer_modules("das")
    assert scorer_modules("pixel_similarity") == [
        "attribution/image_features.py",
        "methods/similarity.py",
        "spec/feature_models.py",
        "spec/measurement_types.py",
        "spec/schema.py",
    ]
    assert scorer_modules("random") == ["methods/random_baseline.py", "spec/measurement_types.py"]
    # DAS reuses TRAK's kernel solver, so a TRAK edit rescores DAS too.
    assert "methods/trak.py" in scorer_modules("das")


def test_unknown_type_is_named():
    with pytest.raises(ValueError, match="'nope'"):
        scorer("nope")
    with pytest.raises(ValueError, match="'nope'"):
        scorer_modules("nope")
    with pytest.raises(ValueError, match="'telepathy'"):
        needs({"type": "trak"}, "telepathy")


def test_entries_declare_what_the_workflow_asks():
    assert needs({"type": "influence"}, "curvature") and not needs({"type": "trak"}, "curvature")
    assert needs({"type": "tracin"}, "trajectory") and needs({"type": "tracin"}, "training")
    assert not method_type("random").ranks_for_removal
    assert scored_values({"type": "trak", "lambda": 0.1, "lambda_grid": [1.0, 0.1]}) == [0.1, 1.0]
    assert scored_values({"type": "tracin"}) != scored_values({"type": "tracin"}), "nan: no hyperparameter"
    with pytest.raises(ValueError, match="unknown needs"):
        MethodType("toy", "score_toy", needs=frozenset({"telepathy"}))


def test_every_type_declares_its_authors_recipe_and_the_readme_names_its_code():
    from ldsbench.spec.config import load_schema
    from ldsbench.spec.method_types import GRADIENT_LAYOUTS

    schema = load_schema()
    readme = (ROOT / "README.md").read_text()
    for name, entry in METHOD_TYPES.items():
        assert entry.recipe is not None and entry.recipe.choices, name
        properties = schema["$defs"][f"{name}_method"]["properties"]
        if "gradient_draws" in properties:
            # The schema's default layout is the registry's, one of the named ones.
            assert properties["gradient_draws"]["default"] == entry.recipe.gradient_draws in GRADIENT_LAYOUTS.values(), name
        else:
            assert entry.recipe.gradient_draws is None, name
        repository = entry.recipe.source.split()[0].rstrip(",")
        if "/" in repository:
            assert repository in readme, f"README's recipe table does not name {repository} ({name})"
