"""Generate the built-in sample: a small Waterbirds-like dataset with a planted bias.

    python sample_data/make_sample.py [--out sample_data] [--seed 0] [--scale 1] [--classes 2] [--labels names]

- label: the foreground object, `landbird` (a round body with a beak) or `waterbird` (a long
  flat hull with a mast); drawn small, in a random colour, with jitter and noise.
- group: "<label> on <place>" (the four Waterbirds groups); place is also kept as an attribute.
- place (the spurious attribute): `land` (green-brown textured ground) or `water` (blue with
  wave stripes). In train the place agrees with the label for 95% of examples; val and test
  are balanced over the four (label, place) groups.
- more attributes, independent of the label: `size` (small/large), `colour` (dark/light/red),
  `time` (day/dusk: overall brightness), and `source` (who labelled it).
- planted subpopulation: every training example with source = `crowd` is mislabeled. Its
  object is one class, its background the other, and its label follows the background: the
  annotators labelled the place, not the bird. These examples look like minority-group
  images but teach the spurious rule, so a debiasing method should rank them as the most
  harmful. `crowd` appears only in train.

Many classes (`--classes N`, 2 to 10; the default 2 is the built-in sample): the objects are
N shapes (the two birds, then square, triangle, cross, ring, diamond, tee, bars, arrow) and
the place agrees with the class's half (classes below N/2 on land, the others on water) in
95% of training images, so there are 2N (class, place) groups, balanced in val and test. A
`crowd` example is labelled by the place: its object comes from a class of the other half.

Labels as users' tables often hold them (`--labels int`: classes 0, 1, ... and `size` 0/1;
`--labels bool`: two classes False/True): the same images and rows, only the text differs.

Many-valued bias (`--bias-values K --conflict P`, K from N to 10; the setting of PGD's and
FFW's Colored MNIST): no place; the object is drawn in one of K colours (COLOUR_SET, the PGD
authors' Colored-MNIST colours) on a plain dark noisy background. In train each class c has
its own colour c except a `conflict` share P of its images, which take one of the K - 1 other
colours at random, so the colours of the conflicting images carry no shortcut of their own.
Validation and test cycle through every (class, colour) pair: colour is independent of the
class there, so test accuracy is the papers' "unbiased accuracy". group = "<label> in
<colour>" (N x K groups); the bias attribute is `colour`; no `crowd` subpopulation.

    python sample_data/make_sample.py --out colour10 --classes 10 --bias-values 10 --conflict 0.01

Fixed seed: running the script twice gives byte-identical files (for N = 2 the same files as
before N existed).
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
CLASSES = ("landbird", "waterbird", "square", "triangle", "cross", "ring", "diamond", "tee", "bars", "arrow")
PLACES = ("land", "water")
COUNTS = {"train": 3000, "val": 400, "test": 800}
AGREEMENT = 0.95  # train: P(place matches label)
N_CROWD = 120  # planted mislabeled training examples
SOURCES = ("field", "museum", "web")
COLOURS = {"dark": (40, 40, 40), "light": (235, 235, 220), "red": (200, 40, 40)}
# The many-valued bias: the ten colours of the PGD authors' Colored MNIST
# (github sumyeongahn/PGD, datagen/data/colored_mnist.py, color_set), as 0-255 RGB.
COLOUR_SET = {"crimson": (220, 20, 60), "teal": (0, 128, 128), "yellow": (253, 233, 16),
              "cerulean": (0, 149, 182), "orange": (237, 145, 33), "purple": (145, 30, 188),
              "cyan": (70, 240, 240), "pink": (250, 197, 187), "lime": (210, 245, 60),
              "maroon": (128, 0, 0)}


def background(place: int, rng: np.random.Generator) -> np.ndarray:
    """Land: green-brown blotches; water: blue with horizontal wave stripes."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    if place == 0:
        base = np.array([95, 120, 60], np.float32) + rng.normal(0, 12, 3)
        blotch = np.sin(xx / rng.uniform(2, 5) + rng.uniform(0, 6)) * np.cos(yy / rng.uniform(2, 5))
        img = base + blotch[..., None] * np.array([25, 20, 10], np.float32)
    else:
        base = np.array([60, 100, 170], np.float32) + rng.normal(0, 12, 3)
        waves = np.sin(yy / rng.uniform(1.2, 2.2) + rng.uniform(0, 6) + 0.3 * np.sin(xx / 3))
        img = base + waves[..., None] * np.array([15, 20, 30], np.float32)
    return img


def object_mask(label: int, large: bool, rng: np.random.Generator) -> np.ndarray:
    """The class's shape (CLASSES[label]) at a jittered centre and size."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    s = (1.25 if large else 1.0) * rng.uniform(0.9, 1.1)
    cy, cx = SIZE / 2 + rng.uniform(-4, 4), SIZE / 2 + rng.uniform(-4, 4)
    return SHAPES[label]((yy - cy) / s, (xx - cx) / s)


def _landbird(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Round body + head + beak."""
    body = (y / 4.5) ** 2 + (x / 4.5) ** 2 <= 1
    head = ((y + 5) / 2.2) ** 2 + ((x - 3) / 2.2) ** 2 <= 1
    beak = (np.abs(y + 5) <= 0.8) & (x > 4) & (x < 7)
    return body | head | beak


def _waterbird(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Long flat hull + thin vertical mast."""
    hull = (np.abs(y - 2) <= 1.6) & (np.abs(x) <= 7)
    mast = (np.abs(x) <= 0.8) & (y >= -7) & (y <= 1)
    return hull | mast


# Shapes of the classes after the two birds, in unit coordinates centred on the object.
SHAPES = (
    _landbird, _waterbird,
    lambda y, x: (np.abs(y) <= 5) & (np.abs(x) <= 5),  # square
    lambda y, x: (y <= 5) & (y >= -6) & (np.abs(x) <= (y + 6) / 2),  # triangle
    lambda y, x: ((np.abs(y) <= 1.5) & (np.abs(x) <= 7)) | ((np.abs(x) <= 1.5) & (np.abs(y) <= 7)),  # cross
    lambda y, x: (y ** 2 + x ** 2 <= 36) & (y ** 2 + x ** 2 >= 12),  # ring
    lambda y, x: np.abs(y) + np.abs(x) <= 7,  # diamond
    lambda y, x: ((np.abs(y + 5) <= 1.5) & (np.abs(x) <= 7)) | ((np.abs(x) <= 1.5) & (y >= -5) & (y <= 7)),  # tee
    lambda y, x: (np.abs(x) <= 7) & ((np.abs(y - 4) <= 1.2) | (np.abs(y + 4) <= 1.2)),  # bars
    lambda y, x: ((np.abs(y) <= 1.3) & (x >= -7) & (x <= 2)) | ((x >= 2) & (x <= 7) & (np.abs(y) <= 7 - x)),  # arrow
)


def half(label: int, n_classes: int) -> int:
    """The place a class agrees with: 0 (land) for the first half of the classes, else 1."""
    return label * 2 // n_classes


def render(label: int, place: int, attrs: dict, rng: np.random.Generator) -> Image.Image:
    img = background(place, rng)
    mask = object_mask(label, attrs["size"] == "large", rng)
    colour = np.array(COLOURS[attrs["colour"]], np.float32) + rng.normal(0, 15, 3)
    img[mask] = 0.75 * colour + 0.25 * img[mask]
    if attrs["time"] == "dusk":
        img = img * 0.6 + np.array([30, 10, 0], np.float32)
    img = img + rng.normal(0, 10, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def plan_split(split: str, n: int, rng: np.random.Generator, n_classes: int = 2) -> list[dict]:
    """Labels, places and attributes of one split (balanced groups outside train)."""
    rows = []
    for i in range(n):
        if split == "train":
            label = int(rng.integers(n_classes))
            agrees = half(label, n_classes)
            place = agrees if rng.random() < AGREEMENT else 1 - agrees
        else:
            label, place = divmod(i % (2 * n_classes), 2)
        rows.append({"object": label, "label": label, "place": place, "split": split,
                     "size": str(rng.choice(["small", "large"])),
                     "colour": str(rng.choice(list(COLOURS))),
                     "time": str(rng.choice(["day", "dusk"], p=[0.7, 0.3])),
                     "source": str(rng.choice(SOURCES))})
    return rows


def plant_crowd(rows: list[dict], rng: np.random.Generator, n: int = N_CROWD, n_classes: int = 2) -> None:
    """Turn n training examples into mislabeled ones whose label follows the place: the
    object is a class of the other half (drawn at random when that half has several)."""
    for row in rng.choice([r for r in rows if r["split"] == "train"], n, replace=False):
        place = half(row["label"], n_classes)
        others = [c for c in range(n_classes) if half(c, n_classes) != place]
        row["object"] = others[0] if len(others) == 1 else int(rng.choice(others))
        row["place"] = place
        row["source"] = "crowd"


LABELS = ("names", "int", "bool")


def label_names(n_classes: int, labels: str = "names") -> list[str]:
    """How the label column writes each class: its shape's name, its index (0, 1, ...: as most
    users' tables and CelebA's attributes do) or, for two classes, False / True."""
    if labels == "int":
        return [str(c) for c in range(n_classes)]
    if labels == "bool":
        if n_classes != 2:
            raise ValueError(f"--labels bool needs exactly 2 classes, got {n_classes}")
        return ["False", "True"]
    if labels != "names":
        raise ValueError(f"--labels must be one of {', '.join(LABELS)}, got {labels!r}")
    return list(CLASSES[:n_classes])


def plan_coloured(split: str, n: int, rng: np.random.Generator, n_classes: int, n_colours: int,
                  conflict: float) -> list[dict]:
    """Labels and colours of one split of the many-valued-bias variant: in train colour = class
    except a `conflict` share drawn uniformly from the other colours; elsewhere every (class,
    colour) pair in turn (colour independent of the class, groups balanced)."""
    rows = []
    for i in range(n):
        if split == "train":
            label = int(rng.integers(n_classes))
            colour = label
            if rng.random() < conflict:
                colour = int(rng.choice([c for c in range(n_colours) if c != label]))
        else:
            label, colour = divmod(i % (n_classes * n_colours), n_colours)
        rows.append({"label": label, "colour": colour, "split": split, "size": str(rng.choice(["small", "large"]))})
    return rows


def render_coloured(label: int, colour: int, large: bool, rng: np.random.Generator) -> Image.Image:
    """The class's shape in COLOUR_SET[colour] (with a little jitter) on a dark noisy ground."""
    img = np.full((SIZE, SIZE, 3), 30, np.float32) + rng.normal(0, 6, 3)
    rgb = np.array(list(COLOUR_SET.values())[colour], np.float32) + rng.normal(0, 8, 3)
    img[object_mask(label, large, rng)] = rgb
    img = img + rng.normal(0, 10, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def generate_coloured(out: Path, rng: np.random.Generator, scale: float, n_classes: int, n_colours: int,
                      conflict: float) -> None:
    if not n_classes <= n_colours <= len(COLOUR_SET):
        raise ValueError(f"--bias-values must be between the number of classes ({n_classes}) and "
                         f"{len(COLOUR_SET)}, got {n_colours}")
    if not 0 <= conflict < 1:
        raise ValueError(f"--conflict must be in [0, 1), got {conflict}")
    names = list(COLOUR_SET)
    rows = [r for split, n in COUNTS.items()
            for r in plan_coloured(split, max(n_classes * n_colours, round(n * scale)), rng, n_classes,
                                   n_colours, conflict)]
    (out / "images").mkdir(parents=True, exist_ok=True)
    with open(out / "metadata.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filename", "label", "split", "group", "colour", "size"])
        for i, r in enumerate(rows):
            name = f"images/{r['split']}_{i:05d}.png"
            render_coloured(r["label"], r["colour"], r["size"] == "large", rng).save(out / name)
            writer.writerow([name, CLASSES[r["label"]], r["split"], f"{CLASSES[r['label']]} in {names[r['colour']]}",
                             names[r["colour"]], r["size"]])


def generate(out: Path, seed: int = 0, scale: float = 1.0, n_classes: int = 2, labels: str = "names",
             counts: dict[str, int] | None = None, bias_values: int = 0, conflict: float = 0.01) -> None:
    """Write the dataset to `out`; `scale` < 1 makes a smaller copy (tests), `n_classes` up to
    len(CLASSES) shapes with 2 * n_classes groups. `labels` = 'int' writes the classes as 0, 1,
    ... and the `size` attribute as 0 / 1 (small / large); 'bool' writes two classes as False /
    True; the images are the same whatever the labels. `counts` ({train, val, test}: examples)
    sets each split's size instead of scale (benchmarks.scale), crowd examples in proportion;
    `bias_values` > 0: the many-valued colour bias instead of the place (n_classes x bias_values
    groups, `conflict` share in train)."""
    if not 2 <= n_classes <= len(CLASSES):
        raise ValueError(f"--classes must be between 2 and {len(CLASSES)}, got {n_classes}")
    names = label_names(n_classes, labels)
    sizes = {"small": "0", "large": "1"} if labels == "int" else {"small": "small", "large": "large"}
    rng = np.random.default_rng(seed)
    if bias_values:
        generate_coloured(out, rng, scale, n_classes, bias_values, conflict)
        return
    split_sizes = counts or {split: round(n * scale) for split, n in COUNTS.items()}
    rows = [r for split in COUNTS for r in plan_split(split, max(4 * n_classes, split_sizes[split]), rng, n_classes)]
    plant_crowd(rows, rng, max(2, round(N_CROWD * split_sizes["train"] / COUNTS["train"])), n_classes)
    (out / "images").mkdir(parents=True, exist_ok=True)
    with open(out / "metadata.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filename", "label", "split", "group", "place", "size", "colour", "time", "source"])
        for i, r in enumerate(rows):
            name = f"images/{r['split']}_{i:05d}.jpg"
            render(r["object"], r["place"], r, rng).save(out / name, quality=85)
            group = f"{names[r['label']]} on {PLACES[r['place']]}"
            writer.writerow([name, names[r["label"]], r["split"], group, PLACES[r["place"]],
                             sizes[r["size"]], r["colour"], r["time"], r["source"]])


def parser() -> argparse.ArgumentParser:
    """The generator's command line (also what a study file's `generate` holds, without --out)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the default size")
    parser.add_argument("--classes", type=int, default=2, help=f"number of classes, 2 to {len(CLASSES)} (default 2)")
    parser.add_argument("--bias-values", type=int, default=0,
                        help="many-valued colour bias with this many colours (0: the two places; default)")
    parser.add_argument("--conflict", type=float, default=0.01,
                        help="with --bias-values: share of training images in another colour (default 0.01)")
    parser.add_argument("--labels", choices=LABELS, default="names",
                        help="the label column: class names (default), integers 0, 1, ... or False/True")
    return parser


def generate_from_args(out: Path, argv: list[str]) -> None:
    """generate() with the command line's arguments (argv without --out)."""
    args = parser().parse_args(argv)
    generate(out, args.seed, args.scale, args.classes, args.labels, bias_values=args.bias_values,
             conflict=args.conflict)


def main() -> None:
    cli = parser()
    args = cli.parse_args()
    try:
        generate(args.out, args.seed, args.scale, args.classes, args.labels, bias_values=args.bias_values,
                 conflict=args.conflict)
    except ValueError as exc:
        cli.error(str(exc))


if __name__ == "__main__":
    main()
