#!/usr/bin/env python3
"""Draws time against site size (log-log) from the tables `bench/run.sh --files N --out F`
wrote, as an SVG on stdout. Standard library only.

Usage: bench/plot.py TITLE FILE... > bench/size.svg
"""

import math
import re
import sys

ROWS = [
    ("pushdeploy: first deploy of A", "total", "pushdeploy, first deploy", "#1f77b4", ""),
    ("bash flow: first deploy of A", "total", "bash flow, first deploy", "#7f7f7f", ""),
    ("pushdeploy: switch A↔B", "total", "pushdeploy default, 10-file change (pusher waits)", "#2ca02c", ""),
    ("pushdeploy keep_previous (diff route): switch A↔B", "live", "pushdeploy keep_previous, 10-file change (to live)", "#d62728", ""),
    ("bash flow: switch A↔B", "total", "bash flow, 10-file change", "#8c564b", "4 3"),
    ("bash flow + sync: switch A↔B", "total", "bash flow + sync, 10-file change", "#e377c2", "4 3"),
    ("git checkout -f: switch A↔B (in place, not atomic)", "total", "git checkout -f, 10-file change", "#000000", "2 2"),
    ("floor of the default route: cp -al of the live release + sync -f", "total", "cp -al + sync (the default route's floor)", "#17becf", "1 2"),
]


def read(path):
    """Returns (files, {label: (total, live)}) from one table."""
    files, rows = None, {}
    with open(path, encoding="utf-8") as table:
        for line in table:
            match = re.match(r"- Site: (\d+) files", line)
            if match:
                files = int(match.group(1))
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if len(cells) == 6 and re.match(r"^[0-9.]+$", cells[2]):
                live = float(cells[4]) if re.match(r"^[0-9.]+$", cells[4]) else None
                rows[cells[0]] = (float(cells[2]), live)
    return files, rows


def main():
    title, paths = sys.argv[1], sys.argv[2:]
    points = {label: [] for label, *_ in ROWS}
    for path in paths:
        files, rows = read(path)
        for label, column, *_ in ROWS:
            if label in rows:
                total, live = rows[label]
                value = live if column == "live" and live is not None else total
                points[label].append((files, value))
    xs = [x for pts in points.values() for x, _ in pts]
    ys = [y for pts in points.values() for _, y in pts if y > 0]
    x0, x1 = math.log10(min(xs)) - 0.1, math.log10(max(xs)) + 0.1
    y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    width, height, left, top, plot_w, plot_h = 860, 470, 70, 40, 400, 370

    def px(x):
        return left + (math.log10(x) - x0) / (x1 - x0) * plot_w

    def py(y):
        return top + plot_h - (math.log10(y) - y0) / (y1 - y0) * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="22" font-size="14">{title}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>',
    ]
    for exponent in range(y0, y1 + 1):
        y = py(10**exponent)
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{10**exponent:g} s</text>')
    for x in sorted(set(xs)):
        out.append(f'<text x="{px(x):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{x:,} files</text>')
    for index, (label, _, name, colour, dash) in enumerate(ROWS):
        pts = sorted(points[label])
        if not pts:
            continue
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2" '
            f'stroke-dasharray="{dash}"/>'
        )
        for x, y in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>')
        ly = top + 10 + index * 20
        out.append(
            f'<line x1="{left + plot_w + 15}" x2="{left + plot_w + 35}" y1="{ly}" y2="{ly}" '
            f'stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/>'
        )
        out.append(f'<text x="{left + plot_w + 40}" y="{ly + 4}" font-size="10">{name}</text>')
    out.append("</svg>")
    print("\n".join(out))


if __name__ == "__main__":
    main()
