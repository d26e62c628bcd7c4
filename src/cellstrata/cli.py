"""The ``cellstrata`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _example(args: argparse.Namespace) -> int:
    from cellstrata.example import generate_example

    paths = generate_example(args.out, plates=args.plates, seed=args.seed)
    print(f"synthetic example written: images {paths['images']}, platemap {paths['platemap']}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from snakemake.exceptions import WorkflowError

    from cellstrata.config import load_config

    try:
        config = load_config(args.config)
    except WorkflowError as err:  # schema violations, as Snakemake reports them
        raise ValueError(str(err)) from err
    print(
        f"{args.config}: valid ({len(config['plates'])} plate(s), channels "
        f"{list(config['channels'].values())})"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cellstrata`` console command."""
    parser = argparse.ArgumentParser(prog="cellstrata", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    example = commands.add_parser("example", help="generate the synthetic example plate(s)")
    example.add_argument("out", help="output directory")
    example.add_argument("--plates", nargs="+", default=["SYN01", "SYN02"])
    example.add_argument("--seed", type=int, default=0)
    example.set_defaults(func=_example)

    validate = commands.add_parser("validate", help="validate a workflow config file")
    validate.add_argument("config")
    validate.set_defaults(func=_validate)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as err:
        print(f"cellstrata {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
