"""docs/configuration.md, the configuration reference, generated from leukemia_mtl/config.py:

    python -m runners.config_reference            # rewrite docs/configuration.md
    python -m runners.config_reference --check    # exit 1 when it is out of date

Every setting by dotted key, with its type, its value in each profile, the values it may take and its one-line doc
(`leukemia_mtl.config.reference_markdown`); tests/test_config.py fails when the committed file is stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from leukemia_mtl.config import REFERENCE_COMMAND, reference_markdown

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REFERENCE, help="where to write it (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when the file is out of date")
    args = parser.parse_args(argv)
    text = reference_markdown()
    if args.check:
        if not args.output.exists() or args.output.read_text(encoding="utf-8") != text:
            print(f"{args.output} is out of date; regenerate it with `{REFERENCE_COMMAND}`", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
