"""Build the untrained tiny T5 (tokenizer learnt from a data file) as a model directory.

python -m radreport.build_tiny --spec configs/model/tiny-t5.yaml --data data/sample/train.json --out DIR
"""

from __future__ import annotations

import argparse
import sys

from radreport.cli import run
from radreport.modeling import build_tiny_t5, describe, load_model
from radreport.prompt import DEFAULT_TEMPLATE, render
from radreport.schema import load_examples


def tokenizer_corpus(examples, template: str = DEFAULT_TEMPLATE) -> list[str]:
    """What the tokenizer must cover: the prompts the model reads and the impressions it writes."""
    return [render(e.findings, template, e.background) for e in examples] + [e.impression for e in examples]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m radreport.build_tiny", description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--prompt-template", default=DEFAULT_TEMPLATE)
    a = p.parse_args(argv)
    out = build_tiny_t5(a.spec, tokenizer_corpus(load_examples(a.data), a.prompt_template), a.out)
    print(f"{out}: {describe(load_model(out))}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
