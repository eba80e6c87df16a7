"""D3M (validation group labels) and Auto-D3M (no group labels): seeds/001 section 4."""
from __future__ import annotations

from core.methods import selection
from core.methods.base import MethodContext, MethodResult, register
from core.methods.options import Option
from core.methods.removal import remove_by_score
from core.train.losses import cross_entropy_np


BETA = Option(1.0, ge=0, help="β of equation 3: how strongly the high-loss groups weigh in the alignment "
                              "(0: every group alike)")


@register("d3m", "D3M", group_info="no/yes", needs="k", options={"beta": BETA})
def d3m(ctx: MethodContext, params: dict) -> MethodResult:
    """Remove the examples whose group alignment (equation 3) is most negative."""
    val_groups = ctx.data.groups[ctx.val_idx]
    losses = selection.group_losses(ctx.erm_val_logits(), ctx.data.labels[ctx.val_idx], val_groups, ctx.data.n_groups)
    align = selection.alignment(ctx.scores(), val_groups, losses, params["beta"])
    return remove_by_score(ctx, params, align, val_groups, ctx.data.group_names)


@register("auto_d3m", "Auto-D3M", group_info="no/no", needs="k", options={"beta": BETA, "fraction": Option(
              0.35, gt=0, lt=1, help="share of each class's validation examples on the pseudo-group's low side")},
          alignment="auto_alignment")
def auto_d3m(ctx: MethodContext, params: dict) -> MethodResult:
    """D3M on pseudo-groups from the top principal component of each class's attributions;
    the k sweep (if any) is judged on the pseudo-groups too: no group labels anywhere."""
    y_val = ctx.data.labels[ctx.val_idx]
    logits = ctx.erm_val_logits()
    pg = selection.pseudo_groups(ctx.scores(), y_val, cross_entropy_np(logits, y_val), ctx.data.class_names,
                                 params["fraction"])
    losses = selection.group_losses(logits, y_val, pg.groups, len(pg.names))
    align = selection.alignment(ctx.scores(), pg.groups, losses, params["beta"])
    return remove_by_score(ctx, params, align, pg.groups, pg.names)
