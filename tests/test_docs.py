"""The README and docs/ pages: every relative link resolves, and every
command in a fenced code block names real rules, options, files and scripts."""

import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SNAKEMAKE = ROOT / ".venv" / "bin" / "snakemake"

FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# Options whose values are paths that must exist.
PATH_OPTIONS = {"--configfile", "--configfiles", "--workflow-profile", "--directory", "-d"}
PLACEHOLDERS = ("<", "my_", "your", "/path/", "$")


def prose(text):
    """The text outside fenced code blocks and inline code."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading):
    """GitHub's anchor of a heading: lowercase, punctuation but hyphens dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path):
    seen, result = {}, set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", FENCE.sub("", path.read_text()), re.MULTILINE):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def test_every_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    for page in PAGES[1:]:
        assert f"](docs/{page.name})" in readme, page.name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    for target in LINK.findall(prose(page.read_text())):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        assert linked.exists(), f"{page.name}: link to missing {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{page.name}: no heading for #{anchor} in {linked.name}"


# Commands in fenced blocks.


def commands(text):
    """Every command of every fenced block, as shlex tokens: continuation lines
    joined, comments dropped, split at &&, ||, ;, | and redirections."""
    for block in FENCE.findall(text):
        info, body = block.split("\n", 1)
        if info.strip("`").strip() not in ("", "bash", "sh", "shell", "console"):
            continue
        body = body.rsplit("```", 1)[0].replace("\\\n", " ")
        for line in body.splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            command = []
            for token in list(lexer) + [";"]:
                if token and set(token) <= set("&|;<>()"):
                    while command and re.fullmatch(r"\w+=.*", command[0]):  # VAR=value prefixes
                        command.pop(0)
                    if command:
                        yield command
                    command = []
                else:
                    command.append(token)


def documented_commands(program):
    return [(page.name, command) for page in PAGES for command in commands(page.read_text()) if Path(command[0]).name in program]


@pytest.fixture(scope="session")
def snakemake_options():
    """Each option of `snakemake --help` and how many values it takes:
    none, one, optional (one or none) or many."""
    text = subprocess.run([SNAKEMAKE, "--help"], capture_output=True, text=True, check=True).stdout
    options = {}
    for line in text.splitlines():
        match = re.match(r"  (-\S.*?)(?:\s{2,}|$)", line)
        for alias in match.group(1).split(", ") if match else []:
            name, _, values = alias.partition(" ")
            options[name] = "many" if "..." in values else "optional" if values.startswith("[") else "one" if values else "none"
    assert {"--configfile", "--cores", "--dry-run"} <= options.keys()
    return options


@pytest.fixture(scope="session")
def rule_names():
    text = "\n".join(path.read_text() for path in [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))])
    names = set(re.findall(r"^\s*rule (\w+):", text, re.MULTILINE)) | set(re.findall(r"^use rule \w+ as (\w+)", text, re.MULTILINE))
    assert "all" in names and "plan" in names
    return names


def is_path(token):
    return "/" in token or "." in token


def is_placeholder(token):
    return any(mark in token for mark in PLACEHOLDERS)


def is_run_output(token):
    """A file a run writes: under a results folder (``results/`` or
    ``results/<name>/``), with the rest of its path in a rule's output."""
    parts = Path(token).parts
    if parts[:1] != ("results",):
        return False
    rules = "\n".join(path.read_text() for path in (ROOT / "rules").glob("*.smk"))
    return any(f'{{R}}/{"/".join(parts[start:])}"' in rules for start in (1, 2))


def test_the_readme_shows_the_commands_ci_and_newcomers_run():
    readme = [command for name, command in documented_commands({"snakemake", "python", "bash"}) if name == "README.md"]
    assert ["bash", "envs/setup_venv.sh"] in readme
    assert [".venv/bin/snakemake", "--cores", "2"] in readme
    assert [".venv/bin/python", "-m", "pytest"] in readme


def test_snakemake_commands_name_real_rules_options_and_files(snakemake_options, rule_names):
    checked = documented_commands({"snakemake"})
    assert checked
    for page, command in checked:
        where = f"{page}: {shlex.join(command)}"
        tokens = command[1:]
        while tokens:
            token = tokens.pop(0)
            if not token.startswith("-"):
                assert is_path(token) or token in rule_names, f"{where}: {token!r} is no rule"
                continue
            option, _, inline_value = token.partition("=")
            assert option in snakemake_options, f"{where}: snakemake has no option {option}"
            arity = snakemake_options[option]
            values = [inline_value] if inline_value else []
            while tokens and not tokens[0].startswith("-") and arity != "none" and (arity == "many" or not values):
                values.append(tokens.pop(0))
            if arity == "one":
                assert len(values) == 1, f"{where}: {option} takes one value"
            for value in values:
                if option in PATH_OPTIONS and not is_placeholder(value):
                    assert (ROOT / value).exists() or is_run_output(value), f"{where}: {value} does not exist"
                if option in ("--forcerun", "-R", "--until", "-U", "--omit-from", "-O") and not is_path(value):
                    assert value in rule_names, f"{where}: {value!r} is no rule"


def test_python_and_bash_commands_name_existing_scripts():
    checked = documented_commands({"python", "python3", "bash"})
    assert checked
    for page, command in checked:
        where = f"{page}: {shlex.join(command)}"
        if command[1:2] == ["-m"]:
            module = command[2]
            candidates = [ROOT / (module.replace(".", "/") + suffix) for suffix in (".py", "/__init__.py")]
            candidates += [ROOT / "workflow_scripts" / path.relative_to(ROOT) for path in candidates]
            assert module == "pytest" or any(path.exists() for path in candidates), f"{where}: no module {module}"
        else:
            assert (ROOT / command[1]).is_file(), f"{where}: no script {command[1]}"
