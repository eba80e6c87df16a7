"""`d3m validate` (every problem in a dataset folder) and `d3m import` (a table written into a
downloaded Waterbirds or CelebA folder), added to the `d3m` parser by core/cli.py."""
from __future__ import annotations

import argparse

from core.config import DEFAULT_DATA
from core.data.validate import validate_dataset


def cmd_validate(args: argparse.Namespace) -> None:
    issues = validate_dataset(args.data, args.group_attribute)
    for issue in issues:
        print(issue)
    if issues:
        raise SystemExit(f"{len(issues)} problem(s) in {args.data}")
    print(f"{args.data}: valid")


def cmd_import(args: argparse.Namespace) -> None:
    from core.data import layouts

    if args.layout == "waterbirds":
        path = layouts.import_waterbirds(args.src)
    else:
        ratio = 4.0 if args.age_subsample else args.majority_ratio
        path = layouts.import_celeba(args.src, args.target, args.spurious, ratio, args.train_size, args.seed)
    print(f"wrote {path} (no image copied); use it with: d3m pipeline --data {path}")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """`d3m validate` and `d3m import`."""
    p = sub.add_parser("validate", help="check a dataset folder and list every problem")
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--group-attribute", default=None)
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("import", help="write a dataset table into a Waterbirds or CelebA folder (no image copied)")
    p.add_argument("layout", choices=["waterbirds", "celeba"])
    p.add_argument("--src", required=True, help="the downloaded dataset folder")
    p.add_argument("--target", default="Blond_Hair", help="CelebA: attribute to predict (default Blond_Hair)")
    p.add_argument("--spurious", default="Male", help="CelebA: spurious attribute, groups = (target, it)")
    p.add_argument("--age-subsample", action="store_true",
                   help="CelebA-Age: training majority:minority groups 4:1 within each class (appendix B.1)")
    p.add_argument("--majority-ratio", type=float, default=None, help="CelebA: another majority:minority ratio")
    p.add_argument("--train-size", type=int, default=None, help="CelebA: cap the training split (paper's Age: 50000)")
    p.add_argument("--seed", type=int, default=0, help="CelebA: subsampling seed")
    p.set_defaults(func=cmd_import)
