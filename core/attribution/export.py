"""Write an analysis's TRAK scores out as one dense validation x train matrix (float32 .npy).

    python -m core.attribution.export RUN_FOLDER OUT.npy

The analysis keeps its scores factored (core/attribution/factors.py); this multiplies them out
in one pass over the train features, into a file (memory-mapped, so memory stays small). Refused
in one line naming the bytes needed when the disk lacks the space. Rows follow val_ids.npy,
columns train_ids.npy of the run folder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.attribution.factors import open_scores
from core.attribution.scores import DenseTooLarge


def export(run_folder: Path, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return open_scores(run_folder).export(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="an analysis run folder (<workdir>/runs/analysis-...)")
    parser.add_argument("out", type=Path, help="the .npy file to write")
    args = parser.parse_args(argv)
    try:
        path = export(args.run, args.out)
    except (DenseTooLarge, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
