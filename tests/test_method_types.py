"""Method types: every type has a scorer, and each type's code hash covers
exactly the modules its scores depend on."""

from pathlib import Path

import pytest
import yaml

from ldsbench.method_types import SCORERS, module_closure, scorer, scorer_modules


def test_every_schema_method_type_has_a_scorer():
    schema = yaml.safe_load((Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml").read_text())
    text = yaml.safe_dump(schema)
    for method_type in SCORERS:
        assert callable(scorer(method_type))
        assert method_type in text


def test_closure_follows_relative_imports_transitively():
    # trak imports scoring, which imports measurement, which imports likelihood.
    assert {"trak.py", "scoring.py", "measurement.py", "likelihood.py", "projection.py"} <= set(module_closure("trak"))


def test_editing_one_method_type_does_not_rehash_unrelated_ones():
    assert "das.py" not in scorer_modules("trak")
    assert "das.py" not in scorer_modules("influence")
    assert "tracin.py" not in scorer_modules("das")
    assert scorer_modules("pixel_similarity") == ["orientation.py", "similarity.py"]
    # DAS reuses TRAK's kernel solver, so a TRAK edit rescores DAS too.
    assert "trak.py" in scorer_modules("das")


def test_unknown_type_is_named():
    with pytest.raises(ValueError, match="'nope'"):
        scorer("nope")
    with pytest.raises(ValueError, match="'nope'"):
        scorer_modules("nope")
