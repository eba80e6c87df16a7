"""What benchmarks.attribution's comparison does with its variants' outputs: the members a
variant finished (also when --variant-timeout stopped it), their scores averaged, and the
follow-up run at a larger size (`--follow-up`: our default and our best option against the
best peer of an earlier, smaller run, a peer that cannot finish getting its time extrapolated
from that run, labelled so)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.peers import PEERS
from core.config import TrakConfig

RECORD_KEYS = ("root", "trak", "targets", "checkpoint", "member")  # what makes a member's scores


def _record_path(out: Path, t: int) -> Path:
    return Path(out) / f"member_{t}.json"


def save_member_record(out: Path, t: int, spec: dict, result: dict) -> None:
    """What made scores_<t>.npy and what it cost, written once the member has finished."""
    _record_path(out, t).write_text(json.dumps({"spec": {k: spec.get(k) for k in RECORD_KEYS}, "result": result}))


def member_record(out: Path, t: int, spec: dict) -> dict | None:
    """The result of member t when its record says the same spec made it (and its scores are there)."""
    path = _record_path(out, t)
    if not path.exists() or not (Path(out) / f"scores_{t}.npy").exists():
        return None
    record = json.loads(path.read_text())
    return record["result"] if record["spec"] == {k: spec.get(k) for k in RECORD_KEYS} else None


def member_scores(out: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores of member 0, the mean over members 0..count-1), one member in memory at a time."""
    first = np.load(Path(out) / "scores_0.npy")
    total = first.astype(np.float64)
    for t in range(1, count):
        total += np.load(Path(out) / f"scores_{t}.npy", mmap_mode="r")
    return first, (total / count).astype(np.float32)


def best_rows(summary: dict) -> tuple[str | None, str | None]:
    """(our option with the highest LDS at T = all, the peer with the highest LDS) of a summary;
    only rows with every member count (a partial row's LDS is at a smaller T)."""
    rows = {n: r for n, r in summary["variants"].items() if r["members"] == summary["models"]}
    ours = [n for n in rows if n not in PEERS]
    peers = [n for n in rows if n in PEERS]
    pick = lambda names: max(names, key=lambda n: rows[n]["lds_t"]) if names else None
    return pick(ours), pick(peers)


def follow_up_variants(summary: dict, default: str) -> list[str]:
    """Our default, our best option and the best peer of the earlier run (no repeats). With no
    peer that finished every member there, the peer with the most members."""
    ours, peer = best_rows(summary)
    if peer is None:
        done = {n: r["members"] for n, r in summary["variants"].items() if n in PEERS}
        peer = max(done, key=done.get) if done else next(iter(PEERS))
    return list(dict.fromkeys([default, ours or default, peer]))


def extrapolated(summary: dict, name: str, n_train: int, n_targets: int, epoch: dict) -> dict | None:
    """Time per model of `name` at n_train from the earlier run, linear in n (featurization and
    scoring both are, at the same number of targets), or None if it has no time there."""
    row = summary["variants"].get(name)
    if row is None or summary["targets"] != n_targets:
        return None
    factor = n_train / summary["n_train"]
    return {"per_model_s": row["per_model_s"] * factor, "per_model_cpu_s": row["per_model_cpu_s"] * factor,
            "epoch_ratio": row["per_model_s"] * factor / epoch["wall"],
            "epoch_ratio_cpu": row["per_model_cpu_s"] * factor / epoch["cpu"],
            "from": f"extrapolated linearly in n from {summary['n_train']} train examples (not measured)"}


def corr_with(results: dict, ref: str | None) -> dict:
    """Pearson correlation of each variant's T-averaged scores with those of `ref` (None if not run)."""
    if ref not in results:
        return {name: None for name in results}
    r0 = results[ref]["mean_scores"].ravel()
    return {name: float(np.corrcoef(r["mean_scores"].ravel(), r0)[0, 1]) for name, r in results.items()}


def summarize(results: dict, failed: dict, epoch: dict, args: argparse.Namespace) -> dict:
    """'ours' is the TrakConfig default (projector/scope) when it was run, else the first variant;
    the reference is traker, or our dense reference when traker was not run (then named so)."""
    default = f"{TrakConfig().projector}/{TrakConfig().scope}"
    ours_name = default if default in results else args.variants[0]
    ref_name = next(r for r in ("traker", "dense/all", ours_name) if r in results)
    ours = results[ours_name]
    corr, corr_dense = corr_with(results, ref_name), corr_with(results, "dense/all")
    for name in results:
        print(f"  Pearson corr of {name} scores with {ref_name}: {corr[name]:.3f}"
              + (f", with dense/all: {corr_dense[name]:.3f}" if corr_dense[name] is not None else ""))
    keys = ("members", "per_model_s", "per_model_cpu_s", "peak_mb", "baseline_mb", "lds_t1", "lds_t")
    variants = {name: {k: r[k] for k in keys}
                | {"epoch_ratio": r["per_model_s"] / epoch["wall"],
                   "epoch_ratio_cpu": r["per_model_cpu_s"] / epoch["cpu"],
                   "corr_with_reference": corr[name], "corr_with_dense": corr_dense[name],
                   "partial": r.get("partial")}
                for name, r in results.items()}
    return {"ours": ours_name, "reference": ref_name if ref_name == "traker" else f"{ref_name} (traker not run)",
            "models": args.models, "proj_dim": args.proj_dim, "lds_models": args.lds_models,
            "lds_seed": args.lds_seed, "epoch_seconds": epoch["wall"], "epoch_cpu_seconds": epoch["cpu"],
            "featurize_epoch_ratio": ours["per_model_s"] / epoch["wall"],
            "featurize_epoch_ratio_cpu": ours["per_model_cpu_s"] / epoch["cpu"],
            "lds_ours": ours["lds_t"], "lds_ours_t1": ours["lds_t1"], "peak_mem_mb_ours": ours["peak_mb"],
            "variants": variants,
            "failed": failed} | peer_keys(results, failed, ours_name)


def peer_keys(results: dict, failed: dict, ours_name: str) -> dict:
    """Per peer that was asked for: lds_<peer> (T = all, and _t1), speedup_vs_<peer> (wall and
    CPU), corr_with_<peer>, peak_mem_mb_<peer>; a peer that could not run has None and <peer>_error."""
    out, ours = {}, results[ours_name]
    for peer in PEERS:
        if peer in failed:
            out |= {f"lds_{peer}": None, f"speedup_vs_{peer}": None, f"{peer}_error": failed[peer]}
        elif peer in results:
            r = results[peer]
            out |= {f"lds_{peer}": r["lds_t"], f"lds_{peer}_t1": r["lds_t1"],
                    f"speedup_vs_{peer}": r["per_model_s"] / ours["per_model_s"],
                    f"speedup_vs_{peer}_cpu": r["per_model_cpu_s"] / ours["per_model_cpu_s"],
                    f"corr_with_{peer}": corr_with(results, peer)[ours_name], f"peak_mem_mb_{peer}": r["peak_mb"]}
    return out
