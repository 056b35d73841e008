"""Tables as text: Markdown and LaTeX, and the number formats every report, summary and findings
table shares (a missing value is an en dash). Pure Python: the rendering side imports it freely."""
from __future__ import annotations

import math


def missing(v) -> bool:
    """None or a float NaN: what the tables print as "–"."""
    return v is None or (isinstance(v, float) and math.isnan(v))


def num(v, fmt="{:.2f}") -> str:
    return "–" if missing(v) else fmt.format(v)


def pm(mean, std) -> str:
    """``mean ± std``; the mean alone where the std is undefined (one seed)."""
    if math.isnan(mean):
        return "–"
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def human(v, unit="") -> str:
    """A count such as parameters or FLOPs with a k / M / G suffix."""
    if v is None or math.isnan(v):
        return "–"
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suf}{unit}"
    return f"{v:.0f}{unit}"


def signed(v) -> str:
    return "–" if math.isnan(v) else f"{v:+.2f}"


def markdown(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")
    lines = ["| " + " | ".join(map(esc, header)) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def latex(header: list[str], rows: list[list[str]], caption: str = "") -> str:
    def esc(s: str) -> str:
        s = str(s)
        for a, b in (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("_", "\\_"),
                     ("#", "\\#"), ("±", "$\\pm$"), ("Δ", "$\\Delta$"), ("–", "--")):
            s = s.replace(a, b)
        return s

    lines = ["\\begin{table}[t]", "\\centering"]
    if caption:
        lines.append(f"\\caption{{{esc(caption)}}}")
    lines += ["\\begin{tabular}{l" + "r" * (len(header) - 1) + "}", "\\toprule",
              " & ".join(map(esc, header)) + " \\\\", "\\midrule"]
    lines += [" & ".join(map(esc, r)) + " \\\\" for r in rows]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"
