"""The package's architecture: subpackages by role with one import direction
(so no import cycle between them), and a workflow that parses without torch."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "workflow_scripts" / "ldsbench"
# Each subpackage imports only itself and the ones before it.
LAYERS = ("runtime", "data", "spec", "diffusion", "planning", "measurement", "attribution", "methods", "evaluation", "report")


def package_imports(path: Path) -> list[tuple[str, int]]:
    """Package modules (dotted, under ldsbench) that ``path`` imports, also inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import at line {node.lineno}; the package uses absolute imports")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ldsbench."):
            found.append((node.module.removeprefix("ldsbench."), node.lineno))
        elif isinstance(node, ast.Import):
            found += [(alias.name.removeprefix("ldsbench."), node.lineno) for alias in node.names if alias.name.startswith("ldsbench.")]
    return found


def modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)


def test_every_module_sits_in_a_subpackage_by_role():
    top_level = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top_level == ["__init__.py"]
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(LAYERS)
    for layer in LAYERS:
        assert (PACKAGE / layer / "__init__.py").read_text().startswith('"""'), f"{layer}/__init__.py says what the subpackage is for"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path):
    layer = path.relative_to(PACKAGE).parts[0]
    for module, line in package_imports(path):
        target = module.split(".")[0]
        assert target in LAYERS, f"{path.name}:{line} imports ldsbench.{module}, outside every subpackage"
        assert LAYERS.index(target) <= LAYERS.index(layer), (
            f"{path.relative_to(PACKAGE)}:{line} imports ldsbench.{module}: {layer} may import only {', '.join(LAYERS[: LAYERS.index(layer) + 1])}"
        )


def test_no_import_cycle_between_modules():
    graph = {}
    for path in modules():
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        graph[name] = {m for m, _ in package_imports(path) if (PACKAGE / (m.replace(".", "/") + ".py")).exists()}
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])


def rule_imports() -> set[str]:
    """Package modules the workflow's rules import while Snakemake parses them."""
    found = set()
    for path in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]:
        found |= set(re.findall(r"^\s*from ldsbench\.([\w.]+) import", path.read_text(), flags=re.M))
    return found


def test_rules_import_spec_and_the_plan_only():
    for module in rule_imports():
        assert module.startswith("spec.") or module in ("planning.plan", "runtime.code_versions", "runtime.device_slots", "data.latents"), (
            f"the rules import ldsbench.{module}"
        )


def test_importing_spec_and_the_rules_modules_loads_no_torch():
    names = sorted({*rule_imports(), *(f"spec.{p.stem}" for p in (PACKAGE / "spec").glob("*.py"))})
    code = "import sys\n" + "".join(f"import ldsbench.{n.removesuffix('.__init__')}\n" for n in names)
    code += "loaded = sorted({'torch', 'diffusers', 'sklearn'} & set(sys.modules)); assert not loaded, loaded\n"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT / "workflow_scripts")
