"""``cellstrata publish``: a FAIR package of any level, as a Workflow Run RO-Crate.

The package holds the data files of the chosen plates and levels (each with size, SHA-256,
encoding format, licence and origin), the workflow that made them (Snakefile, rules, scripts,
package source at the recorded commit, the config reduced to the published plates) as the
crate's computational workflow with the software versions of the provenance records, and one
action per job that made a published file or anything it came from, back to the raw images.
It is built with the ``rocrate`` package (RO-Crate 1.1, Workflow Run Crate 0.5).

Nothing leaves that may not: every plate and level must be public on the publication day
(:mod:`cellstrata.stewardship.origin`), and the written package is searched byte by byte for
what must never appear in it (other plates' names, holders and paths, absolute paths, the
host and user of the records) before it is kept. Levels deleted by retention are refused with
the command that remakes them, never skipped.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from cellstrata.levels import (
    EXPERIMENT_PATH,
    LEVEL_PATHS,
    VERSIONED_LEVELS,
    level_path,
    retention_of,
)
from cellstrata.segment.versions import experiment_versions
from cellstrata.stewardship.origin import data_access, embargo_note, plate_origin
from cellstrata.stewardship.provenance import read_records
from cellstrata.stewardship.solutions import GB, human_size, limit_problems, solutions

#: The profiles the crate conforms to (RO-Crate 1.1 is rocrate's own descriptor).
PROFILES = {
    "https://w3id.org/ro/wfrun/process/0.5": "Process Run Crate",
    "https://w3id.org/ro/wfrun/workflow/0.5": "Workflow Run Crate",
}
#: Terms the RO-Crate 1.1 context lacks, from the Workflow Run Crate vocabulary.
EXTRA_TERMS = {"sha256": "https://w3id.org/ro/terms/workflow-run#sha256"}
#: What of the repository is the workflow (relative to its root), as the crate holds it.
WORKFLOW_PARTS = ("Snakefile", "rules", "scripts", "src/cellstrata", "envs", "pyproject.toml")
WORKFLOW_DIR = "workflow"
#: Encoding formats by suffix (IANA media types where there is one).
FORMATS = {
    ".parquet": "application/vnd.apache.parquet",
    ".tiff": "image/tiff",
    ".tif": "image/tiff",
    ".h5": "application/x-hdf5",
    ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
    ".json": "application/json",
    ".yaml": "application/yaml",
    ".html": "text/html",
    ".png": "image/png",
    ".py": "text/x-python",
    ".smk": "text/x-snakemake",
    ".md": "text/markdown",
    ".toml": "application/toml",
}
REMAKE = (
    "snakemake --cores all --configfile {config} --notemp --until {rules}  "
    "# remakes the {level} of every plate and keeps it until the next run deletes it"
)


class PublishError(ValueError):
    """A package that must not, or cannot, be written; nothing was written."""


@dataclass
class Entry:
    """One data file of the package."""

    path: str
    plate: str | None
    level: str
    version: str | None
    size: int
    md5: str | None = None
    sha256: str | None = None
    #: With ``--by-reference``: the file's DVC object on a public remote, instead of its bytes.
    url: str | None = None


@dataclass
class Package:
    """What :func:`collect` found to publish."""

    plates: list[str]
    levels: list[str]
    version: str | None
    day: date
    entries: list[Entry]
    records: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Bytes the package holds (files given by reference are not in it)."""
        return sum(e.size for e in self.entries if e.url is None)


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    # Hidden files are bookkeeping (Snakemake's .snakemake_timestamp in directory outputs).
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


def _version(config: Mapping[str, Any], version: str | None) -> str:
    versions = experiment_versions(config)
    if version is None:
        return versions[0]
    return version


def _jobs_of(level: str) -> list[str]:
    from cellstrata.levels import LEVEL_DECLARATIONS

    return [job.rule for decl in LEVEL_DECLARATIONS if decl.name == level for job in decl.jobs]


def collect(
    config: Mapping[str, Any],
    workspace: str | os.PathLike = ".",
    *,
    levels: Sequence[str],
    plates: Sequence[str] | None = None,
    version: str | None = None,
    day: date | None = None,
    config_name: str = "config/config.yaml",
) -> Package:
    """The files, records and refusals of a package of ``levels`` of ``plates`` (default:
    every plate) in segmentation ``version`` (default: the config's main one).

    Raises
    ------
    PublishError
        Naming each plate and level that is not public on ``day`` (default today), has no
        licence, is not in the workspace (with the command that remakes a level deleted by
        retention), or an unknown plate or level.
    """
    workspace = Path(workspace)
    day = day or date.today()
    names = [p["name"] for p in config["plates"]]
    plates = list(plates or names)
    unknown = [p for p in plates if p not in names]
    bad_levels = [lv for lv in levels if lv not in LEVEL_PATHS]
    if unknown or bad_levels:
        raise PublishError(
            "; ".join(
                [f"unknown plate {p!r} (plates: {', '.join(names)})" for p in unknown]
                + [f"unknown level {lv!r} (levels: {', '.join(LEVEL_PATHS)})" for lv in bad_levels]
            )
        )
    version = _version(config, version)
    problems: list[str] = []
    entries: list[Entry] = []
    for plate in plates:
        origin = plate_origin(config, plate)
        for level in levels:
            access = data_access(config, [plate], level, day)
            if access != "public":
                embargo = embargo_note(origin, day)
                problems.append(
                    f"plate {plate}, level {level}: access {access} on {day}"
                    + (f" (embargo {embargo})" if embargo else "")
                    + "; only public data is published"
                )
                continue
            if not origin.get("license"):
                problems.append(
                    f"plate {plate}, level {level}: no licence (plates[{plate}].origin.license "
                    "or origin.license, an SPDX id such as CC-BY-4.0)"
                )
                continue
            path = level_path(level, plate, version if level in VERSIONED_LEVELS else None)
            files = _files(workspace / path) if (workspace / path).exists() else []
            if not files:
                problems.append(missing_reason(config, level, plate, path, config_name))
                continue
            entries += [
                Entry(f.relative_to(workspace).as_posix(), plate, level, version, f.stat().st_size)
                for f in files
            ]
    if problems:
        raise PublishError(
            f"publish refused, nothing written ({len(problems)} problem(s)):\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
    notes = []
    if "profiles" in levels:
        experiment = workspace / EXPERIMENT_PATH.format(version=version)
        every = data_access(config, names, "profiles", day)
        if set(plates) == set(names) and every == "public" and experiment.is_dir():
            entries += [
                Entry(
                    f.relative_to(workspace).as_posix(), None, "profiles", version, f.stat().st_size
                )
                for f in _files(experiment)
            ]
        elif experiment.is_dir():
            notes.append(
                "The experiment tables (every plate stacked, consensus, quality) are not included: "
                "they combine plates that are not published here."
            )
    records = _lineage_records(workspace, {e.path for e in entries}, plates)
    for entry in entries:
        entry.sha256 = _sha256(workspace / entry.path)
    return Package(plates, list(levels), version, day, entries, records, notes)


def missing_reason(config: Mapping[str, Any], level: str, plate: str, path: str, name: str) -> str:
    """Why a level is not in the workspace, and what brings it back."""
    retention = retention_of(config["retention"], level, plate)
    if retention == "delete":
        command = REMAKE.format(config=name, rules=" ".join(_jobs_of(level)), level=level)
        return (
            f"plate {plate}, level {level}: not in the workspace ({path}): deleted after use "
            f"(retention delete); remake it first: {command}"
        )
    if retention == "archive":
        return (
            f"plate {plate}, level {level}: not in the workspace ({path}): archived; bring it "
            f"back first: cellstrata pull {path}"
        )
    return f"plate {plate}, level {level}: not in the workspace ({path}): run the workflow first"


def _lineage_records(
    workspace: Path, published: set[str], plates: Sequence[str]
) -> list[dict[str, Any]]:
    """The records of every job that made a published file or anything upstream of one."""
    chosen = _lineage_for(read_records(workspace / "results"), published)
    for record in chosen:
        plate = record["wildcards"].get("plate")
        if plate is not None and plate not in plates:
            raise PublishError(
                f"a published file comes from a job of a plate not published ({record['rule']})"
            )
    return sorted(chosen, key=lambda r: (r["start"], r["rule"]))


def add_references(config: Mapping[str, Any], workspace: Path, package: Package) -> None:
    """Point every entry at its DVC object on a public remote that verifiably holds it
    (``<remote url>/files/md5/<ab>/<cdef...>``), for levels too large to deposit.

    Raises
    ------
    PublishError
        Naming each file no public remote holds (with the push that sends it), or a public
        remote that is a directory (a reference nobody else can follow).
    """
    from cellstrata.stewardship.dvc import remote_has
    from cellstrata.stewardship.provenance import md5_file
    from cellstrata.stewardship.solutions import remote_access

    remotes = config["storage"]["remotes"]
    public = [r for r in remotes if remote_access(config, r) == "public"]
    reachable = [r for r in public if "://" in str(remotes[r]["url"])]
    problems = [
        f"remote {r} is a directory: a reference to it cannot be followed by anyone else"
        for r in public
        if r not in reachable
    ]
    if not public:
        problems.append("no public remote in storage.remotes to refer to")
    for entry in package.entries if reachable else []:
        entry.md5 = md5_file(workspace / entry.path)
        holder = next((r for r in reachable if remote_has(workspace, r, entry.md5)), None)
        if holder is None:
            problems.append(
                f"{entry.path}: on no public remote ({', '.join(reachable)}); send it first: "
                f"cellstrata push --to {reachable[0]} --plates {entry.plate or '<every plate>'} "
                f"--levels {entry.level} --today {package.day}"
            )
            continue
        base = str(remotes[holder]["url"]).rstrip("/")
        entry.url = f"{base}/files/md5/{entry.md5[:2]}/{entry.md5[2:]}"
    if problems:
        raise PublishError(
            f"publish --by-reference refused, nothing written ({len(problems)} problem(s)):\n"
            + "\n".join(f"  - {p}" for p in problems)
        )


def _sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def encoding_of(path: str) -> str:
    """The media type of a file by its suffix (``application/octet-stream`` when unknown)."""
    return FORMATS.get(PurePosixPath(path).suffix.lower(), "application/octet-stream")


def reduced_config(config: Mapping[str, Any], plates: Sequence[str]) -> dict[str, Any]:
    """The config as the crate holds it: only the published plates (their images and
    platemaps named relative to the package: ``raw/<plate>``, the platemap's file name), no
    storage remotes or routes (URLs, endpoints, the lab's infrastructure), no retention
    overrides of other plates."""
    reduced = json.loads(json.dumps(config, default=str))
    reduced["plates"] = []
    for entry in config["plates"]:
        if entry["name"] not in plates:
            continue
        kept = {k: v for k, v in entry.items() if k not in ("images", "cellprofiler", "platemap")}
        source = "cellprofiler" if entry.get("cellprofiler") else "images"
        kept[source] = f"raw/{entry['name']}"
        kept["platemap"] = PurePosixPath(str(entry["platemap"])).name
        reduced["plates"].append(json.loads(json.dumps(kept, default=str)))
    storage = reduced.get("storage", {})
    for key in ("remotes", "routes", "workspace_solution"):
        storage.pop(key, None)
    overrides = reduced.get("retention", {}).get("plates", {})
    for plate in list(overrides):
        if plate not in plates:
            overrides.pop(plate)
    return reduced


def _raw_name(config: Mapping[str, Any], path: str, plates: Sequence[str]) -> str | None:
    """A raw input as the crate names it: ``raw/<plate>/<path under the plate's image
    root>``, never its path on this machine; None when it lies under no published plate's
    root (a workspace file, or a file outside both: then only its name is kept)."""
    for entry in config["plates"]:
        if entry["name"] not in plates:
            continue
        root = str(entry.get("images") or entry.get("cellprofiler") or "")
        if root and (path == root or path.startswith(root.rstrip("/") + "/")):
            return f"raw/{entry['name']}/{path[len(root.rstrip('/')) :].lstrip('/')}".rstrip("/")
    return None


def _scrub(value: Any, workspace: str) -> Any:
    """A record's parameter with absolute paths cut to their file name."""
    if isinstance(value, Mapping):
        return {k: _scrub(v, workspace) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, workspace) for v in value]
    if isinstance(value, str) and (value.startswith(("/", "~")) or workspace in value):
        return PurePosixPath(value.replace(workspace, "").lstrip("/")).name or "."
    return value


def repository_root() -> Path:
    """The checkout holding this package's source (its Snakefile beside ``src/``)."""
    return Path(__file__).resolve().parents[3]


def workflow_files(
    commit: str | None, dirty: bool | None, repo: Path | None = None
) -> tuple[dict[str, bytes], str]:
    """The workflow's files (:data:`WORKFLOW_PARTS`) at ``commit`` (``git archive``), or
    the working tree's when the records name no clean commit this checkout has; and a note
    saying which."""
    repo = repo or repository_root()
    if commit and not dirty:
        try:
            # Only the parts the commit has (git archive refuses a path it lacks).
            listed = subprocess.run(
                ["git", "-C", str(repo), "ls-tree", "--name-only", commit, "--", *WORKFLOW_PARTS],
                capture_output=True,
                check=True,
                text=True,
            ).stdout.split()
            tar = (
                subprocess.run(
                    ["git", "-C", str(repo), "archive", "--format=tar", commit, *listed],
                    capture_output=True,
                    check=True,
                ).stdout
                if listed  # with no path, git archive would take the whole tree
                else None
            )
        except (OSError, subprocess.CalledProcessError):
            tar = None
        if tar:
            found = {}
            with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
                for member in archive.getmembers():
                    if member.isfile():
                        found[member.name] = archive.extractfile(member).read()
            return found, f"the workflow at commit {commit}, the commit the records name"
    found = {}
    for part in WORKFLOW_PARTS:
        for path in _files(repo / part) if (repo / part).exists() else []:
            if "__pycache__" not in path.parts:
                found[path.relative_to(repo).as_posix()] = path.read_bytes()
    state = f"commit {commit} with uncommitted changes" if commit else "no git commit"
    return found, (
        f"the workflow as this checkout holds it at publication: the records name {state}, "
        "so the code that ran cannot be taken from git"
    )


def forbidden_strings(
    config: Mapping[str, Any],
    plates: Sequence[str],
    workspace: Path,
    records: Iterable[Mapping[str, Any]],
) -> dict[str, str]:
    """What must never appear in a package of ``plates``: each other plate's name, holder,
    agreement and paths (where no published plate shares them), the absolute paths of the
    workspace, the repository and the home directory, and the host and user names of the
    records. Value: why."""
    published = [plate_origin(config, p) for p in plates]
    shared = {str(o.get(k)) for o in published for k in ("holder", "agreement")}
    entries = {p["name"]: p for p in config["plates"]}
    shared_paths = {str(entries[p].get("platemap")) for p in plates}
    found: dict[str, str] = {}
    for name, entry in entries.items():
        if name in plates:
            continue
        found[name] = f"plate {name} is not published"
        origin = plate_origin(config, name)
        for key in ("holder", "agreement"):
            value = origin.get(key)
            if value and str(value) not in shared:
                found[str(value)] = f"the {key} of plate {name}"
        for key in ("images", "cellprofiler", "platemap"):
            value = entry.get(key)
            if value and str(value) not in shared_paths:
                found[str(value)] = f"the {key} path of plate {name}"
    for path in {str(workspace.resolve()), str(repository_root()), str(Path.home())}:
        if len(path) > 1:
            found[path] = "an absolute path of this machine"
    for record in records:
        for key in ("host", "user"):
            value = record.get(key)
            # Too short a name matches by chance (a user "ci" inside any word).
            if value and len(str(value)) >= 5:
                found[str(value)] = f"the {key} of a provenance record"
    return found


def find_leaks(root: Path, forbidden: Mapping[str, str], skip: Sequence[str] = ()) -> list[str]:
    """Every file under ``root`` (``skip``: relative prefixes, the workflow's own source)
    whose name or bytes hold a forbidden string: ``path: why``."""
    needles = {text.encode(): why for text, why in forbidden.items() if text}
    leaks = []
    for path in _files(root):
        relative = path.relative_to(root).as_posix()
        if any(relative.startswith(prefix) for prefix in skip):
            continue
        data = relative.encode() + b"\n" + path.read_bytes()
        leaks += [f"{relative}: {why}" for needle, why in needles.items() if needle in data]
    return leaks


def license_url(license_id: str) -> str:
    """The SPDX page of a licence id: the crate's licence entity."""
    return f"https://spdx.org/licenses/{license_id}"


def _job_id(record: Mapping[str, Any]) -> str:
    parts = [record["rule"], *(f"{k}-{v}" for k, v in sorted(record["wildcards"].items()))]
    return "#job-" + "-".join(parts).replace("/", "_").replace(" ", "_")


def build_crate(
    config: Mapping[str, Any],
    package: Package,
    workspace: str | os.PathLike,
    out: str | os.PathLike,
) -> Path:
    """Write ``package`` as a Workflow Run RO-Crate in ``out`` (which must not exist)."""
    from rocrate.model.contextentity import ContextEntity
    from rocrate.rocrate import ROCrate

    workspace = Path(workspace)
    out = Path(out)
    if out.exists():
        raise PublishError(f"{out} exists; publish writes a new directory")
    crate = ROCrate(gen_preview=True)
    crate.metadata.extra_terms.update(EXTRA_TERMS)
    publication = config.get("publication") or {}
    origins = {p: plate_origin(config, p) for p in package.plates}
    licenses = sorted({o["license"] for o in origins.values()})
    holders = sorted({o["holder"] for o in origins.values() if o.get("holder")})
    title = publication.get("title") or (
        f"{config['experiment']}: {', '.join(package.levels)} of plate(s) "
        f"{', '.join(package.plates)}"
    )
    crate.name = title
    crate.description = publication.get("description") or (
        f"The {', '.join(package.levels)} level(s) of plate(s) {', '.join(package.plates)} of "
        f"experiment {config['experiment']} (segmentation version {package.version}), made by "
        "the cellstrata workflow, with the workflow and the provenance of every file."
    )
    crate.datePublished = package.day.isoformat()
    crate.keywords = list(publication.get("keywords") or [])
    license_entities = [
        crate.add(
            ContextEntity(
                crate,
                license_url(x),
                properties={"@type": "CreativeWork", "name": x, "identifier": x},
            )
        )
        for x in licenses
    ]
    crate.license = license_entities[0] if len(license_entities) == 1 else license_entities
    organizations = {
        h: crate.add(
            ContextEntity(
                crate, f"#org-{_slug(h)}", properties={"@type": "Organization", "name": h}
            )
        )
        for h in holders
    }
    creators = publication.get("creators") or []
    people = []
    for person in creators:
        pid = (
            f"https://orcid.org/{person['orcid']}"
            if person.get("orcid")
            else f"#person-{_slug(person['name'])}"
        )
        props = {"@type": "Person", "name": person["name"]}
        if person.get("affiliation"):
            props["affiliation"] = person["affiliation"]
        people.append(crate.add(ContextEntity(crate, pid, properties=props)))
    crate.creator = people or list(organizations.values())
    for pid, name in PROFILES.items():
        profile = crate.add(
            ContextEntity(
                crate, pid, properties={"@type": "CreativeWork", "name": name, "version": "0.5"}
            )
        )
        crate.root_dataset.append_to("conformsTo", profile)

    # The workflow: files at the records' commit (or the working tree), the reduced config.
    commits = {(r["code"]["commit"], bool(r["code"]["dirty"])) for r in package.records}
    commit, dirty = sorted(commits, key=str)[0] if len(commits) == 1 else (None, True)
    files, code_note = workflow_files(commit, dirty)
    staging = Path(tempfile.mkdtemp(prefix="cellstrata-publish-"))
    try:
        _write_crate(
            crate, config, package, workspace, out, staging, files, code_note, organizations
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _one(values: list[Any]) -> Any:
    """A single value as itself, several as a list (RO-Crate 1.1's JSON-LD form)."""
    return values[0] if len(values) == 1 else values


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower()


def _software(package: Package) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for record in package.records:
        for name, version in record["software"].items():
            if version is not None:
                found.setdefault(name, set()).add(version)
    return found


def _write_crate(
    crate, config, package, workspace, out, staging, files, code_note, organizations
) -> None:
    from rocrate.model.contextentity import ContextEntity

    for relative, data in sorted(files.items()):
        target = staging / WORKFLOW_DIR / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    config_path = staging / WORKFLOW_DIR / "config" / "config.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(
        "# The config that made the published files, reduced to the published plates.\n"
        + yaml.safe_dump(reduced_config(config, package.plates), sort_keys=False)
    )
    software = _software(package)
    cellstrata_version = sorted(software.get("cellstrata", {"unknown"}))[-1]
    engine = sorted(software.get("snakemake", {"unknown"}))[-1]
    snakefile = staging / WORKFLOW_DIR / "Snakefile"
    workflow = crate.add_workflow(
        snakefile,
        dest_path=f"{WORKFLOW_DIR}/Snakefile",
        main=True,
        lang="snakemake",
        lang_version=engine,
        properties={
            "name": "cellstrata workflow",
            "description": code_note,
            "version": cellstrata_version,
            "encodingFormat": "text/x-snakemake",
        },
    )
    requirements = []
    for name, versions in sorted(software.items()):
        for version in sorted(versions):
            requirements.append(
                crate.add(
                    ContextEntity(
                        crate,
                        f"#software-{_slug(name)}-{_slug(version)}",
                        properties={
                            "@type": "SoftwareApplication",
                            "name": name,
                            "softwareVersion": version,
                        },
                    )
                )
            )
    workflow["softwareRequirements"] = requirements
    parts = {}
    for path in sorted(p for p in (staging / WORKFLOW_DIR).rglob("*") if p.is_file()):
        relative = path.relative_to(staging).as_posix()
        if relative == f"{WORKFLOW_DIR}/Snakefile":
            continue
        kind = "SoftwareSourceCode" if path.suffix in (".py", ".smk") else None
        props = {
            "name": relative,
            "encodingFormat": encoding_of(relative),
            "contentSize": path.stat().st_size,
        }
        if kind:
            props["@type"] = ["File", kind]
            props["version"] = cellstrata_version
        parts[relative] = crate.add_file(path, dest_path=relative, properties=props)
    workflow["hasPart"] = list(parts.values())

    # The data: one dataset per plate and level (the experiment tables apart), each file with
    # its checksum, format, licence and origin.
    by_path = {}
    groups: dict[tuple[str | None, str], list[Entry]] = {}
    for entry in package.entries:
        groups.setdefault((entry.plate, entry.level), []).append(entry)
    for (plate, level), entries in groups.items():
        origin = plate_origin(config, plate) if plate else None
        directory = (
            str(PurePosixPath(entries[0].path).parent)
            if len(entries) == 1
            else os.path.commonpath([e.path for e in entries])
        )
        # Files given by reference have no directory in the package.
        dataset = (
            None
            if entries[0].url
            else crate.add_dataset(
                dest_path=directory,
                properties={
                    "name": f"{level} of plate {plate}" if plate else f"{level}: experiment tables",
                    "description": f"segmentation version {package.version}"
                    if level in VERSIONED_LEVELS
                    else level,
                },
            )
        )
        for entry in entries:
            props = {
                "name": PurePosixPath(entry.path).name,
                "contentSize": entry.size,
                "sha256": entry.sha256,
                "encodingFormat": encoding_of(entry.path),
            }
            origins = [origin] if origin else [plate_origin(config, p) for p in package.plates]
            license_ids = sorted({o["license"] for o in origins})
            props["license"] = _one([{"@id": license_url(x)} for x in license_ids])
            holders = sorted({o["holder"] for o in origins if o.get("holder")})
            if holders:
                props["copyrightHolder"] = _one([{"@id": organizations[h].id} for h in holders])
            props["conditionsOfAccess"] = f"public on {package.day}; source: " + ", ".join(
                sorted({o["source"] for o in origins})
            )
            if entry.url:
                props["name"] = entry.path
                props["description"] = f"DVC object (MD5 {entry.md5}) of {entry.path}"
                by_path[entry.path] = crate.add_file(entry.url, properties=props)
            else:
                by_path[entry.path] = crate.add_file(
                    workspace / entry.path, dest_path=entry.path, properties=props
                )
            if dataset is not None:
                dataset.append_to("hasPart", by_path[entry.path])

    # The provenance: one action per job, the whole run as the workflow's action.
    raw: dict[str, Any] = {}
    workspace_text = str(Path(workspace).resolve())

    def entity(item: Mapping[str, Any]):
        path = item["path"]
        if path in by_path:
            return by_path[path]
        inside = not path.startswith("/") and not path.startswith("..")
        name = _raw_name(config, path, package.plates) or (
            path if inside else f"raw/{PurePosixPath(path).name}"
        )
        key = f"#{name}"
        if key not in raw:
            raw[key] = crate.add(
                ContextEntity(
                    crate,
                    key,
                    properties={
                        "@type": "CreativeWork",
                        "name": name,
                        "description": "not in this package"
                        + (
                            ": raw data, from the plate's image root"
                            if name.startswith("raw/")
                            else ""
                        ),
                        "contentSize": item["size"],
                    },
                )
            )
        return raw[key]

    agent = next(iter(organizations.values()), None)
    actions = []
    for record in package.records:
        script = parts.get(f"{WORKFLOW_DIR}/scripts/{record['rule']}.py")
        where = ", ".join(f"{k}={v}" for k, v in sorted(record["wildcards"].items()))
        props = {
            "name": f"rule {record['rule']} ({where})",
            "description": f"job of rule {record['rule']} of the cellstrata workflow",
            "startTime": record["start"],
            "endTime": record["end"],
            "actionStatus": {"@id": "http://schema.org/CompletedActionStatus"},
        }
        if agent:
            props["agent"] = agent
        params = []
        for name, value in sorted(_scrub(record["params"], workspace_text).items()):
            params.append(
                crate.add(
                    ContextEntity(
                        crate,
                        f"{_job_id(record)}-param-{_slug(name)}",
                        properties={
                            "@type": "PropertyValue",
                            "name": name,
                            "value": json.dumps(value, sort_keys=True),
                        },
                    )
                )
            )
        if params:
            props["additionalProperty"] = params
        action = crate.add_action(
            script or workflow,
            identifier=_job_id(record),
            object=[entity(i) for i in record["inputs"]],
            result=[entity(o) for o in record["outputs"]],
            properties=props,
        )
        actions.append(action)
        crate.root_dataset.append_to("mentions", action)
    run = crate.add_action(
        workflow,
        identifier="#workflow-run",
        object=sorted(raw.values(), key=lambda e: e.id) if raw else [],
        result=[by_path[e.path] for e in package.entries],
        properties={
            "name": f"cellstrata run of experiment {config['experiment']} ({len(actions)} jobs)",
            "description": "the jobs of the workflow that made this package's files",
            "startTime": min((r["start"] for r in package.records), default=None),
            "endTime": max((r["end"] for r in package.records), default=None),
            "actionStatus": {"@id": "http://schema.org/CompletedActionStatus"},
        },
    )
    run["hasPart"] = actions
    if agent:
        run["agent"] = agent
    crate.root_dataset.append_to("mentions", run)
    readme = staging / "README.md"
    readme.write_text(depositor_readme(config, package, code_note))
    crate.add_file(
        readme,
        dest_path="README.md",
        properties={"name": "README for the depositor", "encodingFormat": "text/markdown"},
    )
    crate.write(out)


def depositor_readme(config: Mapping[str, Any], package: Package, code_note: str) -> str:
    """The package's README: what it holds, under which licence, how to check and remake it."""
    lines = [
        f"# {config['experiment']}: {', '.join(package.levels)} of {', '.join(package.plates)}",
        "",
        "A Workflow Run RO-Crate written by `cellstrata publish` on "
        f"{package.day} (segmentation version {package.version}).",
        "",
        "| plate | level | files | size | licence | holder | source |",
        "|-------|-------|-------|------|---------|--------|--------|",
    ]
    groups: dict[tuple[str | None, str], list[Entry]] = {}
    for entry in package.entries:
        groups.setdefault((entry.plate, entry.level), []).append(entry)
    for (plate, level), entries in groups.items():
        origins = [plate_origin(config, p) for p in ([plate] if plate else package.plates)]
        lines.append(
            f"| {plate or 'all (experiment tables)'} | {level} | {len(entries)} | "
            f"{human_size(sum(e.size for e in entries))} | "
            + " | ".join(
                ", ".join(sorted({str(o.get(k)) for o in origins}))
                for k in ("license", "holder", "source")
            )
            + " |"
        )
    lines += [
        "",
        "- `ro-crate-metadata.json`: every file with its size, SHA-256, format, licence and "
        "origin; one `CreateAction` per job that made a file of the package or anything it came "
        "from, back to the raw images (rule, inputs, outputs, parameters, start and end).",
        "- `ro-crate-preview.html`: the same, for a browser.",
        f"- `{WORKFLOW_DIR}/`: {code_note}; `{WORKFLOW_DIR}/config/config.yaml` is the config "
        "reduced to the published plates (image roots as `raw/<plate>`).",
        "",
        "Check the files: `sha256sum` of each against its `sha256` in `ro-crate-metadata.json`.",
        "Remake them: point `raw/<plate>` at the raw images and run "
        f"`snakemake --cores all --configfile {WORKFLOW_DIR}/config/config.yaml` in "
        f"`{WORKFLOW_DIR}/`.",
    ]
    lines += ["", *package.notes] if package.notes else []
    return "\n".join(lines) + "\n"


def verify_crate(path: str | os.PathLike) -> int:
    """Read a crate back with ``rocrate`` and check every data entity's SHA-256 and size;
    return how many were checked.

    Raises
    ------
    PublishError
        Naming each file that is missing or differs.
    """
    from rocrate.rocrate import ROCrate

    root = Path(path)
    crate = ROCrate(root)
    checked, bad = 0, []
    for entity in crate.data_entities:
        expected = entity.get("sha256")
        if expected is None:
            continue
        if "://" in entity.id:  # by reference: checked on its remote when it was published
            continue
        file = root / entity.id
        if not file.is_file():
            bad.append(f"{entity.id}: missing")
        elif _sha256(file) != expected or file.stat().st_size != int(entity.get("contentSize")):
            bad.append(f"{entity.id}: checksum or size differs from the metadata")
        checked += 1
    if bad:
        raise PublishError(f"{root}: {len(bad)} file(s) do not match:\n" + "\n".join(bad))
    return checked


def target_parts(config: Mapping[str, Any], package: Package, target: str) -> list[list[Entry]]:
    """The package split into records that fit solution ``target`` of ``storage.solutions``
    (one when it fits): a per-dataset limit splits whole files into several records; a
    per-file or total limit, a minimum dataset size or a solution that is not public refuses.

    Raises
    ------
    PublishError
        Naming the solution, its limit, and the files that do not fit.
    """
    table = solutions(config)
    if target not in table:
        raise PublishError(
            f"--target {target!r} is not a storage solution ({', '.join(sorted(table))})"
        )
    solution = table[target]
    if solution.get("access") != "public":
        raise PublishError(
            f"--target {target}: a {solution.get('access')} solution; publish goes to public ones"
        )
    problems = []
    per_file = solution.get("limit_gb_file")
    if per_file is not None:
        over = [e for e in package.entries if e.url is None and e.size > per_file * GB]
        problems += [
            f"{e.path} ({human_size(e.size)}): over {target}'s {human_size(per_file * GB)} per file"
            for e in over
        ]
    # A total limit or a minimum dataset size refuses; a per-dataset limit splits below.
    rest = {k: v for k, v in solution.items() if k not in ("limit_gb_file", "limit_gb_dataset")}
    problems += limit_problems(target, rest, size=package.size, largest_file=0, total=package.size)
    if problems:
        raise PublishError(
            f"publish --target {target} refused, nothing written:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
    limit = solution.get("limit_gb_dataset")
    if limit is None or package.size <= limit * GB:
        return [package.entries]
    parts: list[list[Entry]] = [[]]
    used = 0
    for entry in package.entries:
        size = 0 if entry.url else entry.size
        if size > limit * GB:
            raise PublishError(
                f"publish --target {target} refused, nothing written: {entry.path} "
                f"({human_size(entry.size)}) alone is over {target}'s {human_size(limit * GB)} "
                "per dataset"
            )
        if used + size > limit * GB and parts[-1]:
            parts.append([])
            used = 0
        parts[-1].append(entry)
        used += size
    return parts


def publish(
    config: Mapping[str, Any],
    workspace: str | os.PathLike,
    out: str | os.PathLike,
    *,
    levels: Sequence[str],
    plates: Sequence[str] | None = None,
    version: str | None = None,
    day: date | None = None,
    zip_archive: bool = False,
    target: str | None = None,
    by_reference: bool = False,
    config_name: str = "config/config.yaml",
) -> list[Path]:
    """Write the package (several, ``out/part-N``, where ``target``'s per-dataset limit
    splits it), check it holds nothing it must not, read it back and check every checksum;
    return the crate directories (and their ``.zip`` with ``zip_archive``).

    Raises
    ------
    PublishError
        A refusal (see :func:`collect`, :func:`target_parts`), or a package found to hold a
        forbidden string (it is removed, nothing stays).
    """
    workspace = Path(workspace)
    out = Path(out)
    if out.exists():
        raise PublishError(f"{out} exists; publish writes a new directory")
    package = collect(
        config,
        workspace,
        levels=levels,
        plates=plates,
        version=version,
        day=day,
        config_name=config_name,
    )
    if by_reference:
        add_references(config, workspace, package)
    parts = target_parts(config, package, target) if target else [package.entries]
    forbidden = forbidden_strings(config, package.plates, workspace, package.records)
    written = []
    try:
        for index, entries in enumerate(parts):
            part = Package(
                package.plates,
                package.levels,
                package.version,
                package.day,
                entries,
                _lineage_for(package.records, {e.path for e in entries}),
                list(package.notes),
            )
            if len(parts) > 1:
                part.notes.append(f"Record {index + 1} of {len(parts)} of this publication.")
            directory = out / f"part-{index + 1}" if len(parts) > 1 else out
            build_crate(config, part, workspace, directory)
            leaks = find_leaks(
                directory, forbidden, skip=[f"{WORKFLOW_DIR}/{p}" for p in WORKFLOW_PARTS]
            )
            if leaks:
                raise PublishError(
                    "publish refused: the package would hold what it must not (removed):\n"
                    + "\n".join(f"  - {leak}" for leak in leaks)
                )
            verify_crate(directory)
            written.append(directory)
            if zip_archive:
                written.append(zip_crate(directory))
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        for path in written:
            path.unlink(missing_ok=True) if path.suffix == ".zip" else None
        raise
    return written


def _lineage_for(records: Sequence[Mapping[str, Any]], paths: set[str]) -> list[dict[str, Any]]:
    """The records of ``records`` upstream of ``paths``."""
    producers = {o["path"]: r for r in records for o in r["outputs"]}
    chosen: dict[int, Mapping[str, Any]] = {}
    frontier = [producers[p] for p in sorted(paths) if p in producers]
    while frontier:
        record = frontier.pop()
        if id(record) not in chosen:
            chosen[id(record)] = record
            frontier += [producers[i["path"]] for i in record["inputs"] if i["path"] in producers]
    return [dict(r) for r in records if id(r) in chosen]


def zip_crate(directory: Path) -> Path:
    """``directory`` as ``directory.zip`` (its files at the zip's root, sorted)."""
    target = directory.with_suffix(".zip")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in _files(directory):
            archive.write(path, path.relative_to(directory).as_posix())
    return target
