"""Generate the built-in sample: a small Waterbirds-like dataset with a planted bias.

    python sample_data/make_sample.py [--out sample_data] [--seed 0]

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

Fixed seed: running the script twice gives byte-identical files.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32
CLASSES = ("landbird", "waterbird")
PLACES = ("land", "water")
COUNTS = {"train": 3000, "val": 400, "test": 800}
AGREEMENT = 0.95  # train: P(place matches label)
N_CROWD = 120  # planted mislabeled training examples
SOURCES = ("field", "museum", "web")
COLOURS = {"dark": (40, 40, 40), "light": (235, 235, 220), "red": (200, 40, 40)}


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
    """Landbird: round body + head + beak. Waterbird: long flat hull + thin vertical mast."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    s = (1.25 if large else 1.0) * rng.uniform(0.9, 1.1)
    cy, cx = SIZE / 2 + rng.uniform(-4, 4), SIZE / 2 + rng.uniform(-4, 4)
    if label == 0:
        body = ((yy - cy) / (4.5 * s)) ** 2 + ((xx - cx) / (4.5 * s)) ** 2 <= 1
        head = ((yy - cy + 5 * s) / (2.2 * s)) ** 2 + ((xx - cx - 3 * s) / (2.2 * s)) ** 2 <= 1
        beak = (np.abs(yy - cy + 5 * s) <= 0.8 * s) & (xx > cx + 4 * s) & (xx < cx + 7 * s)
        return body | head | beak
    hull = (np.abs(yy - cy - 2 * s) <= 1.6 * s) & (np.abs(xx - cx) <= 7 * s)
    mast = (np.abs(xx - cx) <= 0.8 * s) & (yy >= cy - 7 * s) & (yy <= cy + 1 * s)
    return hull | mast


def render(label: int, place: int, attrs: dict, rng: np.random.Generator) -> Image.Image:
    img = background(place, rng)
    mask = object_mask(label, attrs["size"] == "large", rng)
    colour = np.array(COLOURS[attrs["colour"]], np.float32) + rng.normal(0, 15, 3)
    img[mask] = 0.75 * colour + 0.25 * img[mask]
    if attrs["time"] == "dusk":
        img = img * 0.6 + np.array([30, 10, 0], np.float32)
    img = img + rng.normal(0, 10, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def plan_split(split: str, n: int, rng: np.random.Generator) -> list[dict]:
    """Labels, places and attributes of one split (balanced groups outside train)."""
    rows = []
    for i in range(n):
        if split == "train":
            label = int(rng.integers(2))
            place = label if rng.random() < AGREEMENT else 1 - label
        else:
            label, place = divmod(i % 4, 2)
        rows.append({"object": label, "label": label, "place": place, "split": split,
                     "size": str(rng.choice(["small", "large"])),
                     "colour": str(rng.choice(list(COLOURS))),
                     "time": str(rng.choice(["day", "dusk"], p=[0.7, 0.3])),
                     "source": str(rng.choice(SOURCES))})
    return rows


def plant_crowd(rows: list[dict], rng: np.random.Generator, n: int = N_CROWD) -> None:
    """Turn n training examples into mislabeled ones whose label follows the place."""
    for row in rng.choice([r for r in rows if r["split"] == "train"], n, replace=False):
        row["object"] = 1 - row["label"]
        row["place"] = row["label"]
        row["source"] = "crowd"


def generate(out: Path, seed: int = 0, scale: float = 1.0) -> None:
    """Write the dataset to `out`; `scale` < 1 makes a smaller copy (tests)."""
    rng = np.random.default_rng(seed)
    rows = [r for split, n in COUNTS.items() for r in plan_split(split, max(8, round(n * scale)), rng)]
    plant_crowd(rows, rng, max(2, round(N_CROWD * scale)))
    (out / "images").mkdir(parents=True, exist_ok=True)
    with open(out / "metadata.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["filename", "label", "split", "group", "place", "size", "colour", "time", "source"])
        for i, r in enumerate(rows):
            name = f"images/{r['split']}_{i:05d}.jpg"
            render(r["object"], r["place"], r, rng).save(out / name, quality=85)
            group = f"{CLASSES[r['label']]} on {PLACES[r['place']]}"
            writer.writerow([name, CLASSES[r["label"]], r["split"], group, PLACES[r["place"]],
                             r["size"], r["colour"], r["time"], r["source"]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the default size")
    args = parser.parse_args()
    generate(args.out, args.seed, args.scale)


if __name__ == "__main__":
    main()
