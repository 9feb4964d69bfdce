"""Plots of an Evaluation: score vs a parameter with error bars, the time/score frontier
(matplotlib, imported here only), and the best and worst images per configuration (PIL)."""
from __future__ import annotations


def _axes(ax):
    if ax is not None:
        return ax.figure, ax
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    return fig, ax


def _label(row, factors) -> str:
    """The configuration's values only (the axes say what they are): short enough to annotate a point."""
    return " · ".join(str(row[f]) for f in factors) or "all"


def score_vs_param(ev, x: str, score: str, by: str | None = None, ax=None):
    if x not in ev.factors:
        raise ValueError(f"plot: {x!r} was not varied; varied: {', '.join(ev.factors)}")
    others = [f for f in ev.factors if f != x]
    by = by if by is not None else (others[0] if len(others) == 1 else None)
    summary = ev.summary(score)
    fig, ax = _axes(ax)
    groups = summary.groupby(by, sort=False) if by else [(None, summary)]
    for value, part in groups:
        part = part.sort_values(x)
        yerr = [part[score] - part[f"{score}_ci_low"], part[f"{score}_ci_high"] - part[score]]
        ax.errorbar(part[x].astype(str) if part[x].dtype == object else part[x], part[score], yerr=yerr,
                    marker="o", capsize=3, label=None if by is None else f"{by}={value}")
    ax.set_xlabel(x)
    ax.set_ylabel(f"{score} (mean, {95}% CI)")
    ax.set_title(f"{score} vs {x} · {ev.prompt_set.name} ({len(ev.prompt_set)} prompts)", fontsize=9)
    if by:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def frontier(ev, score: str, ax=None):
    summary = ev.summary(score)
    fig, ax = _axes(ax)
    xerr = None
    ax.set_title(" · ".join(ev.factors), fontsize=8, loc="right")
    yerr = [summary[score] - summary[f"{score}_ci_low"], summary[f"{score}_ci_high"] - summary[score]]
    ax.errorbar(summary["s_per_image"], summary[score], yerr=yerr, xerr=xerr, fmt="o", capsize=3)
    for _, row in summary.iterrows():
        ax.annotate(_label(row, ev.factors), (row["s_per_image"], row[score]), fontsize=7,
                    xytext=(4, 2), textcoords="offset points")
    best = _pareto(summary, score)
    ax.plot(best["s_per_image"], best[score], "--", color="grey", lw=1, label="frontier")
    ax.set_xlabel("seconds per image")
    ax.set_ylabel(f"{score} (mean, 95% CI)")
    ax.set_title(f"{score} vs time · {ev.prompt_set.name}", fontsize=9, loc="left")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _pareto(summary, score: str):
    """Configurations no other beats on both time and score, by time."""
    rows = summary.sort_values(["s_per_image", score], ascending=[True, False])
    keep, best = [], float("-inf")
    for i, row in rows.iterrows():
        if row[score] > best:
            keep.append(i)
            best = row[score]
    return rows.loc[keep]


def best_worst(ev, score: str, k: int = 3, cell: int = 96):
    """A PIL image: per configuration, its k best then k worst images by score, labelled."""
    from PIL import Image, ImageDraw

    df = ev.df.dropna(subset=[score])
    groups = list(df.groupby(ev.factors, sort=False)) if ev.factors else [((), df)]
    label_w, line = 165, 12
    out = Image.new("RGB", (label_w + 2 * k * (cell + 4) + 12, len(groups) * (cell + line + 6) + line + 4), "white")
    draw = ImageDraw.Draw(out)
    draw.text((label_w, 2), f"best {k} by {score}", fill="black")
    draw.text((label_w + k * (cell + 4) + 12, 2), f"worst {k}", fill="black")
    for gi, (key, part) in enumerate(groups):
        key = key if isinstance(key, tuple) else (key,)
        y0 = line + 4 + gi * (cell + line + 6)
        for li, (f, v) in enumerate(zip(ev.factors, key)):     # one line per factor: long sampler names fit
            draw.text((2, y0 + cell // 2 - 6 * len(key) + li * line), f"{f}={v}"[:27], fill="black")
        ranked = part.sort_values(score, ascending=False)
        picks = list(ranked.head(k).itertuples()) + [None] + list(ranked.tail(k).iloc[::-1].itertuples())
        x = label_w
        for pick in picks:
            if pick is None:
                x += 12
                continue
            path = ev.log.image_file({"run_id": pick.run_id, "image_path": pick.image_path})
            with Image.open(path) as im:
                out.paste(im.convert("RGB").resize((cell, cell), Image.NEAREST), (x, y0))
            draw.text((x + 2, y0 + cell + 1), f"{getattr(pick, score):.2f}", fill="black")
            x += cell + 4
    return out
