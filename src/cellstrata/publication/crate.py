"""Writing a publication as a Workflow Run RO-Crate with the ``rocrate`` package (RO-Crate
1.1, Workflow Run Crate 0.5): the data files with size, SHA-256, encoding format, licence and
origin; the workflow at the recorded commit and the config reduced to the published plates as
the crate's computational workflow, with the software versions of the records; one action per
job back to the raw images; a preview and a README for the depositor. Reading it back and
checking every checksum (:func:`verify_crate`), and zipping it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from cellstrata.levels import (
    VERSIONED_LEVELS,
)
from cellstrata.publication.package import Entry, Package, PublishError, files_under, sha256_file
from cellstrata.stewardship.origin import plate_origin
from cellstrata.stewardship.solutions import human_size

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
        for path in files_under(repo / part) if (repo / part).exists() else []:
            if "__pycache__" not in path.parts:
                found[path.relative_to(repo).as_posix()] = path.read_bytes()
    state = f"commit {commit} with uncommitted changes" if commit else "no git commit"
    return found, (
        f"the workflow as this checkout holds it at publication: the records name {state}, "
        "so the code that ran cannot be taken from git"
    )


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
        elif sha256_file(file) != expected or file.stat().st_size != int(entity.get("contentSize")):
            bad.append(f"{entity.id}: checksum or size differs from the metadata")
        checked += 1
    if bad:
        raise PublishError(f"{root}: {len(bad)} file(s) do not match:\n" + "\n".join(bad))
    return checked


def zip_crate(directory: Path) -> Path:
    """``directory`` as ``directory.zip`` (its files at the zip's root, sorted)."""
    target = directory.with_suffix(".zip")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files_under(directory):
            archive.write(path, path.relative_to(directory).as_posix())
    return target
