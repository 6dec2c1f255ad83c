"""``python -m examples.shop.demo`` (from the repository's root; `make demo` does it)."""

from __future__ import annotations

import argparse
import signal
import sys

from examples.shop.demo.story import run


def main() -> int:
    parser = argparse.ArgumentParser(description="The Pilotboat shop demo.")
    parser.add_argument("--namespace", default="shop")
    parser.add_argument("--short", action="store_true", help="the shorter story of the e2e test")
    parser.add_argument("--cleanup", action="store_true",
                        help="delete the namespace and its databases at the end")
    args = parser.parse_args()
    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C: the operator and customers stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run(args.namespace, short_story=args.short, cleanup=args.cleanup)
    print()
    for ch in result.chapters:
        mark = "✔" if ch.ok else ("✘" if ch.ok is False else "·")
        print(f"{mark} {ch.title}")
    if result.passed:
        print(f"demo passed in {result.seconds:.0f}s: every step behaved as described; "
              f"report: {result.report_path}")
        return 0
    print(f"demo FAILED after {result.seconds:.0f}s"
          + (f": {result.error}" if result.error else "") + f"; report: {result.report_path}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
