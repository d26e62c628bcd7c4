"""Every level is declared once (cellstrata.levels): its paths are spelled nowhere else."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "src" / "cellstrata" / "schemas" / "config.schema.yaml"
DECLARATION = ROOT / "src" / "cellstrata" / "levels.py"
# Rules keep their literal output paths, as Snakemake style wants (checked below against
# the declaration); logs and benchmarks are no level.
LITERAL_SECTIONS = ("output", "log", "benchmark")
# Files that may not import cellstrata.levels, and why.
EXEMPT = {
    # Digests the example on commits before and after a refactoring, by the command line
    # only, so one copy serves both (cellstrata.levels did not exist before issue 16).
    "benchmarks/example_digests.py",
}
_SECTION = re.compile(r"^(?P<indent>\s+)(?P<name>\w+):")


def _level_path():
    """A path under results/ of a level (named as the schema names them), of the experiment
    tables, or of the provenance records."""
    schema = yaml.safe_load(SCHEMA.read_text())
    names = [*schema["properties"]["retention"]["properties"]["levels"]["properties"]]
    names += ["experiment", "provenance"]
    return re.compile(rf"results/({'|'.join(names)})/")


def _code_lines(path):
    """``(number, line)`` of a file, leaving out a rule's output, log and benchmark lines."""
    section = None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = _SECTION.match(line)
        if match:
            section = (len(match["indent"]), match["name"])
        elif section and line.strip() and len(line) - len(line.lstrip()) <= section[0]:
            section = None
        if path.suffix == ".smk" and section and section[1] in LITERAL_SECTIONS:
            continue
        yield number, line


def _sources():
    for folder, pattern in (
        ("src", "**/*.py"),
        ("scripts", "**/*.py"),
        ("benchmarks", "**/*.py"),
        ("rules", "*.smk"),
    ):
        yield from sorted((ROOT / folder).glob(pattern))
    yield ROOT / "Snakefile"


def test_level_paths_are_spelled_only_in_the_declaration():
    pattern = _level_path()
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _sources()
        if path != DECLARATION and path.relative_to(ROOT).as_posix() not in EXEMPT
        for number, line in _code_lines(path)
        if pattern.search(line)
    ]
    assert not found, "level paths spelled outside cellstrata.levels:\n" + "\n".join(found)


def _rule_outputs():
    """``{rule: {output name or None: path}}`` of the rules, as written in rules/*.smk."""
    rules = {}
    for path in sorted((ROOT / "rules").glob("*.smk")):
        rule = section = None
        for line in path.read_text().splitlines():
            if line.startswith("rule "):
                rule, section = line.split()[1].rstrip(":"), None
                rules[rule] = {}
                continue
            match = _SECTION.match(line)
            if match and len(match["indent"]) == 4:
                section = match["name"]
                continue
            if rule and section == "output":
                # An output starts at the section's indentation, named or not; its path may
                # be on a line of its own (a long retained(...)).
                start = re.match(r" {8}(?:(\w+)=)?\S", line)
                if start:
                    name = start[1]
                literal = re.search(r'"(results/[^"]+)"', line)
                if literal:
                    rules[rule][name] = literal[1]
    return rules


def test_rules_write_the_declared_paths():
    from cellstrata.levels import JOBS

    rules = _rule_outputs()
    for rule, job in JOBS.items():
        assert rule in rules, f"level rule {rule} is in no rules/*.smk"
        outputs = dict(rules[rule])
        assert outputs.pop("provenance") == job.provenance, rule
        assert outputs == dict(job.outputs), rule
    # A rule writing under a level's directory is declared as one of the level's jobs.
    pattern = _level_path()
    for rule, outputs in rules.items():
        if any(pattern.match(path) for path in outputs.values()):
            assert rule in JOBS, f"rule {rule} writes a level but is not declared"


def test_levels_match_the_schema():
    """The schema's retention levels and size ratios are the declared levels'."""
    from cellstrata.levels import LEVEL_DECLARATIONS, LEVELS

    schema = yaml.safe_load(SCHEMA.read_text())["properties"]
    assert tuple(schema["retention"]["properties"]["levels"]["properties"]) == LEVELS
    ratios = schema["storage"]["properties"]["size_ratios"]["default"]
    assert list(ratios) == [level.name for level in LEVEL_DECLARATIONS if level.path]
    assert {level.name: level.retention for level in LEVEL_DECLARATIONS} == {
        "raw": "keep",
        "manifest": None,
        "qc": None,
        "illumination": None,
        "corrected": "delete",
        "masks": "archive",
        "crops": "delete",
        "embeddings": "archive",
        "features": "archive",
        "profiles": "keep",
    }


@pytest.mark.parametrize(
    ("pattern", "values", "expected"),
    [
        ("a/{x}/{y}", {"y": [1, 2], "x": ["p"], "z": [9, 9]}, ["a/p/1", "a/p/2"]),
        ("a/{x}", {"x": []}, []),
        ("a", {"x": [1, 2]}, ["a"]),
    ],
)
def test_expand_pattern_ignores_fields_not_named(pattern, values, expected):
    from cellstrata.levels import expand_pattern

    assert expand_pattern(pattern, **values) == expected


def test_experiment_tables_are_the_profiles_modules():
    """The experiment and quality jobs' tables are those the profiles package writes."""
    from cellstrata.levels import JOBS
    from cellstrata.profiles.experiment import EXPERIMENT_STEPS
    from cellstrata.profiles.quality import QUALITY_TABLES

    assert tuple(JOBS["experiment"].outputs) == EXPERIMENT_STEPS
    assert tuple(JOBS["quality"].outputs) == QUALITY_TABLES
