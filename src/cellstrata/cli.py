"""The ``cellstrata`` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from cellstrata.levels import RETIRED_PATH, STALE_LOG

#: What marks a workspace: the workflow's Snakefile (a lab's clone) or DVC's directory.
WORKSPACE_MARKERS = ("Snakefile", ".dvc")
DEFAULT_CONFIG = "config/config.yaml"
WORKSPACE_HELP = f"the workspace's {DEFAULT_CONFIG}"
WORKSPACE_ARG_HELP = (
    "directory holding results/ (default: the nearest directory at or above the working "
    "directory with a Snakefile or .dvc/)"
)


TODAY_HELP = "the day whose access counts, YYYY-MM-DD (default today; embargoes end on it)"


def _day(text: str):
    from cellstrata.stewardship.origin import parse_day

    try:
        return parse_day(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def find_workspace(start: Path) -> Path:
    """The workspace holding ``start``: the nearest directory at or above it with a
    ``Snakefile`` or ``.dvc`` (commands run from ``results/...`` must not report every level
    missing)."""
    start = start.resolve()
    for directory in (start, *start.parents):
        if any((directory / marker).exists() for marker in WORKSPACE_MARKERS):
            return directory
    raise ValueError(
        f"no cellstrata workspace (a directory with a Snakefile or .dvc/) at or above {start}; "
        "run the command in the workspace or name it with --workspace"
    )


def _locate(args: argparse.Namespace) -> None:
    """Set ``args.workspace`` (given, or found from the working directory) and
    ``args.config_path``: ``--config`` as given, else the workspace's config/config.yaml."""
    given = args.workspace
    args.workspace = Path(given) if given is not None else find_workspace(Path.cwd())
    if getattr(args, "config", None) is None:
        args.config = DEFAULT_CONFIG  # the name dvc.yaml records, relative to the workspace
        args.config_path = args.workspace / DEFAULT_CONFIG
    else:
        args.config_path = Path(args.config)


def _config(args: argparse.Namespace) -> dict:
    from snakemake.exceptions import WorkflowError

    from cellstrata.workflow.validate import (
        load_config,
    )

    try:
        # validate takes its config as an argument; the other commands through _locate.
        return load_config(getattr(args, "config_path", args.config))
    except WorkflowError as err:  # schema violations, as Snakemake reports them
        raise ValueError(str(err)) from err


def _example(args: argparse.Namespace) -> int:
    from cellstrata.example import generate_example

    paths = generate_example(args.out, plates=args.plates, seed=args.seed)
    print(f"synthetic example written: images {paths['images']}, platemap {paths['platemap']}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    config = _config(args)
    print(
        f"{args.config}: valid ({len(config['plates'])} plate(s), channels "
        f"{list(config['channels'].values())})"
    )
    return 0


def _emit(frame, args: argparse.Namespace, text: str) -> None:
    if args.json:
        print(frame.to_json(orient="records", indent=1))
    elif args.csv:
        print(frame.to_csv(index=False), end="")
    else:
        print(text)


def _status(args: argparse.Namespace) -> int:
    from cellstrata.stewardship.status import (
        status,
    )

    table = status(_config(args), args.workspace)
    _emit(table, args, table.to_string(index=False))
    return 0


def _storage_plan(args: argparse.Namespace) -> int:
    from cellstrata.stewardship.storage import format_plan, project, storage_plan

    if args.months:
        return _storage_months(args)
    plan = storage_plan(_config(args), args.workspace)
    projection = project(plan, args.plates) if args.plates else None
    if args.json or args.csv:
        _emit(projection if projection is not None else plan, args, "")
    else:
        print(format_plan(plan, projection))
    return 0


def _storage_months(args: argparse.Namespace) -> int:
    from cellstrata.stewardship.lifecycle import (
        format_projection,
        project_months,
        projection_figure,
    )

    frame = project_months(
        _config(args), args.workspace, months=args.months, day=args.today, plates=args.plates
    )
    if args.figure:
        scaled = f" ({args.plates} plates)" if args.plates else ""
        projection_figure(frame, args.figure, title=f"Storage cost by month{scaled}")
    if args.json or args.csv:
        _emit(frame, args, "")
    else:
        print(format_projection(frame))
    return 0


def _storage_advise(args: argparse.Namespace) -> int:
    from cellstrata.stewardship.advice import advise, format_advice

    frame = advise(
        _config(args), args.workspace, plates=args.plates, months=args.months, day=args.today
    )
    if args.json or args.csv:
        _emit(frame, args, "")
    else:
        print(format_advice(frame, args.months))
    return 0


def _access(args: argparse.Namespace) -> int:
    from cellstrata.stewardship.access import access_report

    table = access_report(_config(args), args.workspace, day=args.today)
    _emit(table, args, table.drop(columns="path").to_string(index=False))
    violations = table[table["violation"] != ""]
    if len(violations):
        print(f"{len(violations)} violation(s): see the violation column", file=sys.stderr)
        return 1
    return 0


def _dvc_setup(args: argparse.Namespace) -> int:
    from cellstrata.stewardship.dvc import (
        check_directory_remotes,
        setup_dvc,
    )
    from cellstrata.stewardship.tracked import (
        StewardshipError,
    )

    config = _config(args)
    path = setup_dvc(config, args.config, args.workspace, create_remotes=args.create_remotes)
    print(f"wrote {path}; remotes configured in .dvc/config (credentials: .dvc/config.local)")
    try:
        check_directory_remotes(config, args.workspace)
    except StewardshipError as err:  # set up all the same: the share may be mounted later
        print(f"note: {err}")
    return 0


def _push(args: argparse.Namespace) -> int:
    from cellstrata.stewardship.dvc import push

    report = push(
        _config(args),
        args.workspace,
        remote=args.to,
        plates=args.plates,
        levels=args.levels,
        day=args.today,
    )
    where = f" to remote {', '.join(report['remotes'])}" if report["remotes"] else ""
    print(f"pushed and verified {len(report['verified'])} object(s){where}")
    return 0


def _archive(args: argparse.Namespace) -> int:
    from cellstrata.stewardship.dvc import archive, remote_location

    config = _config(args)
    outs = archive(config, args.workspace, dry_run=args.dry_run)
    verb = "would archive" if args.dry_run else "archived (verified, removed locally)"
    for out in outs:
        where = remote_location(config, out.remote, args.workspace)
        print(f"{verb}: {out.path} -> remote {out.remote} at {where}")
    if not outs:
        print("nothing to archive")
    return 0


def _pull(args: argparse.Namespace) -> int:
    from cellstrata.stewardship.dvc import pull

    for path in pull(_config(args), args.paths, args.workspace):
        print(f"pulled {path}")
    return 0


def _apply_retention(args: argparse.Namespace) -> int:
    from cellstrata.stewardship.retention import (
        apply_retention,
    )

    removed = apply_retention(_config(args), args.workspace, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {len(removed)} file(s) of levels with retention delete")
    return 0


def _retire(args: argparse.Namespace) -> int:
    from cellstrata.stewardship.dvc import retire

    outs = retire(
        _config(args),
        args.version,
        args.workspace,
        config_name=args.config,
        dry_run=args.dry_run,
    )
    verb = "would retire" if args.dry_run else "retired (verified on the remote, removed locally)"
    for out in outs:
        print(f"{verb}: {out.path} -> remote {out.remote}")
    if not args.dry_run:
        print(f"{args.version} retired; its record: {RETIRED_PATH}/{args.version}.yaml")
    return 0


def _adopt(args: argparse.Namespace) -> int:
    from cellstrata.stewardship.ownership import (
        adopt,
    )

    changes = adopt(_config(args), args.workspace, plates=args.plates, dry_run=args.dry_run)
    verb = "would adopt" if args.dry_run else "adopted"
    for change in changes:
        print(f"{verb} {change}")
    if not changes:
        print("nothing to adopt: every record already names this config's experiment and plates")
    return 0


def _clean_stale(args: argparse.Namespace) -> int:
    from cellstrata.stewardship.dvc import clean_stale

    files, records = clean_stale(_config(args), args.workspace, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for path in files:
        print(f"{verb}: {path}")
    print(
        f"{verb} {len(files)} stale file(s) (no current job makes them); "
        f"{len(records)} record(s) of them {'would move' if args.dry_run else 'moved'} to "
        + STALE_LOG.format(plate="<plate>")
    )
    return 0


def _lifecycle(args: argparse.Namespace) -> int:
    from datetime import date

    from cellstrata.stewardship.lifecycle import apply_lifecycle, transitions

    config = _config(args)
    day = args.today or date.today()
    done, _ = apply_lifecycle(
        config, args.workspace, day=day, dry_run=args.dry_run, config_name=args.config
    )
    verb = "due" if args.dry_run else "moved (verified on the new remote, old copies removed)"
    for move in done:
        print(f"{verb}: {move}")
    if not done:
        print(f"nothing due on {day}")
    later = [t for t in transitions(config, args.workspace) if t.due > day]
    for move in sorted(later, key=lambda t: t.due):
        print(f"later: {move}")
    return 0


def _plan_reprocess(args: argparse.Namespace) -> int:
    from cellstrata.stewardship.reprocess import format_plan, plan_reprocess

    snakefile = Path(args.snakefile) if args.snakefile else args.workspace / "Snakefile"
    if not snakefile.exists():
        raise ValueError(f"no Snakefile at {snakefile}: name the workflow's with --snakefile")
    plan = plan_reprocess(_config(args), args.config_path, args.workspace, snakefile=snakefile)
    print(json.dumps(plan, indent=1) if args.json else format_plan(plan))
    return 0


def _catalog(args: argparse.Namespace) -> int:
    from cellstrata.stewardship.catalog import write_catalog

    out = Path(args.out) if args.out else args.workspace / "results" / "catalog.html"
    path = write_catalog(_config(args), out, args.workspace, day=args.today)
    print(f"wrote {path} (open it from disk: no server, no network)")
    return 0


def _segment_nuclei(args: argparse.Namespace) -> int:
    from cellstrata.segment.directory import segment_directory

    params = {} if args.diameter is None else {"diameter": args.diameter}
    if args.gpu:
        params["gpu"] = True
    written = segment_directory(
        args.in_dir, args.out_dir, method=args.method, model=args.model, **params
    )
    print(f"wrote {len(written)} label image(s) to {args.out_dir}")
    return 0


def workspace_path(path: str, workspace: Path, cwd: Path) -> str:
    """``path`` as the workspace-relative POSIX path provenance records use.

    Absolute paths, and relative ones typed inside the workspace, are read as the shell
    would (relative to ``cwd``); from outside the workspace a relative path is taken as
    relative to it. The file need not exist (an archived or deleted output has a record).
    """
    workspace, cwd = workspace.resolve(), cwd.resolve()
    given = Path(path)
    if not given.is_absolute():
        inside = cwd == workspace or workspace in cwd.parents
        given = (cwd if inside else workspace) / given
    full = given.resolve()
    try:
        return full.relative_to(workspace).as_posix()
    except ValueError:
        raise ValueError(f"{path} is outside the workspace {workspace}") from None


def _provenance(args: argparse.Namespace) -> int:
    from cellstrata.stewardship.provenance import format_lineage, lineage, read_records

    target = workspace_path(args.path, args.workspace, Path.cwd())
    chain = lineage(target, read_records(Path(args.workspace, "results")))
    print(json.dumps(chain, indent=1) if args.json else format_lineage(chain))
    return 0


def _profile_install(args: argparse.Namespace) -> int:
    from cellstrata.workflow.cluster import install_profile

    target, action = install_profile(args.name, dest=args.dest, force=args.force)
    print(f"profile {args.name} {action}: {target}")
    if target.name == args.name and target.parent.name == "snakemake":
        print(f"run it from the workflow directory with: snakemake --profile {args.name}")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from cellstrata.publication.publish import publish
    from cellstrata.publication.zenodo import (
        token_from_environment,
        upload_package,
        zenodo_settings,
    )

    config = _config(args)
    if (args.upload or args.publish) and args.target != "zenodo":
        raise ValueError("--upload and --publish deposit to Zenodo: give --target zenodo")
    if args.upload:  # before anything is written
        token_from_environment(zenodo_settings(config)["token_env"])
    if args.upload and Path(args.out).exists():  # an earlier, interrupted upload: resume it
        written = []
    else:
        written = publish(
            config,
            args.workspace,
            args.out,
            levels=args.levels.split(","),
            plates=args.plates,
            version=args.version,
            day=args.today,
            zip_archive=args.zip,
            target=args.target,
            by_reference=args.by_reference,
            config_name=args.config,
        )
    for path in written:
        print(f"wrote {path}")
    if args.upload:
        for result in upload_package(
            config, args.workspace, args.out, publish=args.publish, day=args.today
        ):
            print(
                f"zenodo deposit {result['id']} ({result['state']}, DOI {result['doi']}): "
                f"uploaded {len(result['uploaded'])} file(s), {len(result['skipped'])} already "
                "there; recorded in publications.yaml"
            )
    return 0


def _export_ome_zarr(args: argparse.Namespace) -> int:
    from cellstrata.publication.omezarr import export_ome_zarr

    out = export_ome_zarr(
        _config(args),
        args.workspace,
        args.out,
        plate=args.plate,
        levels=args.levels.split(","),
        version=args.version,
        day=args.today,
        config_name=args.config,
    )
    print(f"wrote {out} (OME-NGFF plate)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cellstrata`` console command."""
    parser = argparse.ArgumentParser(prog="cellstrata", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func, help: str, *, config: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        if config:
            sub.add_argument("--config", help=f"workflow config (default: {WORKSPACE_HELP})")
            sub.add_argument("--workspace", help=WORKSPACE_ARG_HELP)
        sub.set_defaults(func=func)
        return sub

    example = command("example", _example, "generate the synthetic example plate(s)", config=False)
    example.add_argument("out", help="output directory")
    example.add_argument("--plates", nargs="+", default=["SYN01", "SYN02"])
    example.add_argument("--seed", type=int, default=0)

    validate = command("validate", _validate, "validate a workflow config file", config=False)
    validate.add_argument("config")

    for name, func, text in (
        ("status", _status, "per plate x level: present, on a remote, archived, deleted, missing"),
        (
            "access",
            _access,
            "per plate x level: origin, access today, embargo, where it is, where it may go, "
            "violations (exit 1 when any)",
        ),
    ):
        sub = command(name, func, text)
        sub.add_argument("--json", action="store_true")
        sub.add_argument("--csv", action="store_true")
        if name == "access":
            sub.add_argument("--today", type=_day, help=TODAY_HELP)

    storage = commands.add_parser("storage", help="storage planning")
    storage_commands = storage.add_subparsers(dest="storage_command", required=True)
    plan = storage_commands.add_parser("plan", help="files, bytes, retention and cost per level")
    plan.add_argument("--config", help=f"workflow config (default: {WORKSPACE_HELP})")
    plan.add_argument("--workspace", help=WORKSPACE_ARG_HELP)
    plan.add_argument("--plates", type=int, help="project the cost to this many plates")
    plan.add_argument(
        "--months",
        type=int,
        help="project the monthly cost over this many months, the retention schedules applied",
    )
    plan.add_argument("--today", type=_day, help="the first month's day (with --months)")
    plan.add_argument("--figure", help="with --months: also draw the projection to this PNG")
    plan.add_argument("--json", action="store_true")
    plan.add_argument("--csv", action="store_true")
    plan.set_defaults(func=_storage_plan)
    advise = storage_commands.add_parser(
        "advise",
        help="per plate x level: the solutions meeting its needs, access and limits, cheapest "
        "first, and why each other is excluded",
    )
    advise.add_argument("--config", help=f"workflow config (default: {WORKSPACE_HELP})")
    advise.add_argument("--workspace", help=WORKSPACE_ARG_HELP)
    advise.add_argument("--plates", type=int, help="advise for this many plates (per level)")
    advise.add_argument("--months", type=int, default=36, help="cost horizon (default 36)")
    advise.add_argument("--today", type=_day, help=TODAY_HELP)
    advise.add_argument("--json", action="store_true")
    advise.add_argument("--csv", action="store_true")
    advise.set_defaults(func=_storage_advise)

    dvc = commands.add_parser("dvc", help="DVC set-up")
    dvc_commands = dvc.add_subparsers(dest="dvc_command", required=True)
    setup = dvc_commands.add_parser("setup", help="dvc init, remotes from the config, dvc.yaml")
    setup.add_argument("--config", help=f"workflow config (default: {WORKSPACE_HELP})")
    setup.add_argument("--workspace", help=WORKSPACE_ARG_HELP)
    setup.add_argument(
        "--create-remotes",
        action="store_true",
        help="create directory remotes that do not exist (push, archive and pull never do)",
    )
    setup.set_defaults(func=_dvc_setup)

    profile = commands.add_parser("profile", help="Snakemake profiles of this workflow")
    profile_commands = profile.add_subparsers(dest="profile_command", required=True)
    install = profile_commands.add_parser(
        "install",
        help="copy profiles/NAME where `snakemake --profile NAME` finds it "
        "(Snakemake's user config directory, $XDG_CONFIG_HOME/snakemake)",
    )
    install.add_argument("name", help="profile under profiles/ (slurm, local)")
    install.add_argument("--dest", help="install here instead (a profile directory)")
    install.add_argument(
        "--force", action="store_true", help="replace an installed copy that differs"
    )
    install.set_defaults(func=_profile_install)

    push = command(
        "push",
        _push,
        "dvc commit + push kept levels to the remotes the routing gives them, verify every "
        "object; with --to, an explicit move of chosen plates and levels to a remote",
    )
    push.add_argument("--to", help="also copy the outputs to this remote (explicit move)")
    push.add_argument("--plates", nargs="+", help="only these plates")
    push.add_argument("--levels", nargs="+", help="only these levels")
    push.add_argument("--today", type=_day, help=TODAY_HELP + " (with --to)")
    archive = command("archive", _archive, "push archived levels, verify them, remove locally")
    archive.add_argument("--dry-run", action="store_true")
    pull = command("pull", _pull, "dvc pull outputs (with provenance) and restore their order")
    pull.add_argument("paths", nargs="+")
    apply = command(
        "apply-retention",
        _apply_retention,
        "explicitly delete local outputs of levels whose retention is delete",
    )
    apply.add_argument("--dry-run", action="store_true")
    retire = command(
        "retire",
        _retire,
        "stop keeping a segmentation version the config no longer makes: push and verify its "
        "kept/archived outputs, then remove them locally and from dvc.yaml",
    )
    retire.add_argument("version", help="e.g. classical-06db907c (see cellstrata status)")
    retire.add_argument("--dry-run", action="store_true")
    adopt = command(
        "adopt",
        _adopt,
        "take the workspace's data over for this config (raw images moved to a new mount, "
        "experiment renamed): its records then name this config's experiment and plates",
    )
    adopt.add_argument("--plates", nargs="+", help="only these plates (default: all)")
    adopt.add_argument("--dry-run", action="store_true")
    clean = command(
        "clean-stale",
        _clean_stale,
        "remove batch files no current job makes (an old batching); their records go to "
        + STALE_LOG.format(plate="<plate>"),
    )
    clean.add_argument("--dry-run", action="store_true")
    lifecycle = command(
        "lifecycle",
        _lifecycle,
        "move outputs along their level's retention schedule: the transitions due, each "
        "refused when the access rules forbid it; push, verify, then remove the old copies",
    )
    lifecycle.add_argument("--dry-run", action="store_true", help="list what is due, move nothing")
    lifecycle.add_argument("--today", type=_day, help="the day the schedules are counted to")
    reprocess = command(
        "plan-reprocess",
        _plan_reprocess,
        "what running --config would do to this workspace before it runs: levels and "
        "versions made, jobs per rule (Snakemake's dry run), core-hours from the recorded job "
        "times, archived or deleted inputs to restore or remake, storage added per month",
    )
    reprocess.add_argument("--snakefile", help="the workflow (default: the workspace's)")
    reprocess.add_argument("--json", action="store_true")
    catalog = command(
        "catalog",
        _catalog,
        "one self-contained HTML page: plates x levels with state, access, solution, size and "
        "cost, method versions side by side, upcoming lifecycle moves, lineage",
    )
    catalog.add_argument("--out", help="the page (default: results/catalog.html)")
    catalog.add_argument("--today", type=_day, help=TODAY_HELP)
    nuclei = command(
        "segment-nuclei",
        _segment_nuclei,
        "segment nuclei in every image of IN_DIR; one label TIFF per image (same name) in OUT_DIR",
        config=False,
    )
    nuclei.add_argument("in_dir")
    nuclei.add_argument("out_dir")
    nuclei.add_argument("--method", default="classical", choices=["classical", "cellpose"])
    nuclei.add_argument(
        "--model", help="cellpose model: built-in name (nuclei, cyto3, cpsam) or model file"
    )
    nuclei.add_argument("--gpu", action="store_true", help="run cellpose on the GPU")
    nuclei.add_argument(
        "--diameter",
        type=float,
        help="nucleus diameter in px (default: estimated; cellpose: the model's own)",
    )
    provenance = command("provenance", _provenance, "lineage of an output back to raw images")
    provenance.add_argument("path")
    provenance.add_argument("--json", action="store_true")
    publish = command(
        "publish",
        _publish,
        "write a Workflow Run RO-Crate of chosen levels and public plates (data, workflow, "
        "provenance), checked and read back; --target checks a solution's limits",
    )
    publish.add_argument("--levels", required=True, help="comma-separated, e.g. profiles,features")
    publish.add_argument("--plates", nargs="+", help="only these plates (default: all)")
    publish.add_argument("--version", help="segmentation version (default: the config's)")
    publish.add_argument("--out", required=True, help="directory to write (must not exist)")
    publish.add_argument("--zip", action="store_true", help="also write OUT.zip")
    publish.add_argument("--target", help="a solution of storage.solutions (zenodo, github, ...)")
    publish.add_argument("--today", type=_day, help=TODAY_HELP)
    publish.add_argument(
        "--by-reference",
        action="store_true",
        help="name each file's DVC object on a public remote (URL, MD5) instead of its bytes",
    )
    publish.add_argument(
        "--upload",
        action="store_true",
        help="with --target zenodo: deposit OUT (a draft; resumes an interrupted upload); "
        "token from $ZENODO_TOKEN (publication.zenodo.token_env)",
    )
    publish.add_argument("--publish", action="store_true", help="with --upload: publish it")
    export = commands.add_parser("export", help="export a plate for viewers and archives")
    export_commands = export.add_subparsers(dest="export_command", required=True)
    zarr = export_commands.add_parser(
        "ome-zarr",
        help="a plate as an OME-NGFF HCS plate (IDR, napari-ome-zarr): fields with channel "
        "names and contrast limits, masks as labels",
    )
    zarr.add_argument("out", help="the .zarr directory to write (must not exist)")
    zarr.add_argument("--plate", required=True)
    zarr.add_argument(
        "--levels", default="corrected,masks", help="corrected or raw, and masks (default both)"
    )
    zarr.add_argument("--version", help="segmentation version of the masks (default: the config's)")
    zarr.add_argument("--today", type=_day, help=TODAY_HELP)
    zarr.add_argument("--config", help=f"workflow config (default: {WORKSPACE_HELP})")
    zarr.add_argument("--workspace", help=WORKSPACE_ARG_HELP)
    zarr.set_defaults(func=_export_ome_zarr)

    args = parser.parse_args(argv)
    try:
        if "workspace" in vars(args):
            _locate(args)
        return args.func(args)
    except (ValueError, OSError, RuntimeError) as err:
        print(f"cellstrata {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
