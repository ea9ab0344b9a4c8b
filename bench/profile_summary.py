"""Summarise a py-spy ``--format raw`` profile (collapsed stacks): the top functions.

    python -m bench.profile_summary bench/results/profile-flap-1000.txt [--top 25] [--filter X]

"inclusive" counts the samples in which a function is anywhere on the stack, "self" those in
which it is on top. Percentages are of all samples.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    file = match.group("file")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{match.group('func')} ({file})"


def summarise(path: Path, top: int = 25, contains: str = "") -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        if contains and contains not in stack:
            continue
        count = int(count_text)
        total += count
        frames = [_short(f) for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    lines = [f"{path.name}: {total} samples" + (f" containing {contains!r}" if contains else "")]
    lines.append("  inclusive%   self%  function")
    for frame, count in inclusive.most_common(top):
        lines.append(f"  {100 * count / total:9.1f}  {100 * own[frame] / total:6.1f}  {frame}")
    lines.append("  -- top by self --")
    for frame, count in own.most_common(top):
        lines.append(
            f"  {100 * inclusive[frame] / total:9.1f}  {100 * count / total:6.1f}  {frame}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_summary")
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--filter", default="", help="only stacks containing this text")
    args = parser.parse_args()
    print(summarise(args.profile, args.top, args.filter))


if __name__ == "__main__":
    main()
