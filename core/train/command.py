"""Command-line options for the model and its training recipe (`d3m pipeline|analyze`), and
`d3m models`, which lists the architectures."""
from __future__ import annotations

import argparse

from core.config import RECIPES, DataConfig, TrainConfig
from core.train.archs import describe_archs
from core.train.augment import AUGMENTS
from core.train.training import OPTIMIZERS


def add_model_opts(p: argparse.ArgumentParser) -> None:
    """--arch, --weights, --image-size, --resize and the recipe's options."""
    t = TrainConfig()
    p.add_argument("--arch", default="small_cnn",
                   help="small_cnn or any torchvision classifier, e.g. resnet50 (`d3m models` lists them)")
    p.add_argument("--weights", default=None,
                   help="imagenet (torchvision's weights, or imagenet:NAME), or a file: state_dict, "
                        "checkpoint, TorchScript")
    p.add_argument("--image-size", type=int, default=None,
                   help=f"pixels per side (default {DataConfig().image_size}; with --weights imagenet the "
                        "weights' crop, e.g. 224)")
    p.add_argument("--resize", type=int, default=None,
                   help="resize the shorter side to this, then centre-crop --image-size (default: squash; "
                        "with --weights imagenet the weights' own, e.g. 256 for 224)")
    p.add_argument("--recipe", default=None, choices=list(RECIPES),
                   help="the paper's training settings (appendix B.2); options given here win")
    p.add_argument("--optimizer", default=None, choices=list(OPTIMIZERS), help=f"default {t.optimizer}")
    p.add_argument("--lr", type=float, default=None, help=f"learning rate (default {t.lr})")
    p.add_argument("--weight-decay", type=float, default=None, help=f"default {t.weight_decay}")
    p.add_argument("--momentum", type=float, default=None, help=f"SGD momentum (default {t.momentum})")
    p.add_argument("--batch-size", type=int, default=None, help=f"training batch (default {t.batch_size})")
    p.add_argument("--augment", default=None, choices=list(AUGMENTS),
                   help="random resized crop + flip (default auto: on for torchvision archs, off for small_cnn)")
    p.add_argument("--no-amp", dest="amp", action="store_const", const=False, default=None,
                   help="train in float32 on a GPU (default: bfloat16 mixed precision there)")


def model_settings(args: argparse.Namespace) -> dict:
    """The analysis_config settings the options above give (None: not given)."""
    return {"arch": args.arch, "weights": args.weights, "image_size": args.image_size, "resize": args.resize,
            "recipe": args.recipe, "optimizer": args.optimizer, "lr": args.lr, "weight_decay": args.weight_decay,
            "momentum": args.momentum, "batch_size": args.batch_size, "augment": args.augment, "amp": args.amp}


def cmd_models(args: argparse.Namespace) -> None:
    for row in describe_archs():
        print(f"{row['arch']:20s} {row['imagenet']:22s} {row['preprocessing']}")


def add_parser(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("models", help="list the architectures (--arch), their ImageNet weights and preprocessing"
                   ).set_defaults(func=cmd_models)
