"""CTranslate2 against our transformers generation path, same model, same batches, one run.

    pip install ctranslate2
    python bench/ct2_backend.py --model runs/demo/train/model [--out bench/results/ct2_backend.json]

Converts the model directory with ctranslate2's TransformersConverter, then times batches of 16
findings with beam 4 through both, and checks that greedy outputs are identical.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from radreport.generation import GenerationParams, generate  # noqa: E402
from radreport.io import atomic_write_json  # noqa: E402
from radreport.modeling import load_model, load_tokenizer, read_meta  # noqa: E402
from radreport.prompt import render  # noqa: E402
from radreport.schema import load_examples  # noqa: E402


def main() -> None:
    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--out", default=str(ROOT / "bench/results/ct2_backend.json"))
    a = p.parse_args()
    model, tok, meta = load_model(a.model), load_tokenizer(a.model), read_meta(a.model)
    rows = load_examples(ROOT / "data/sample/dev1.json")[: 16 * a.batches]
    batches = [[e.findings for e in rows[i : i + 16]] for i in range(0, len(rows), 16)]
    tmp = tempfile.mkdtemp()
    TransformersConverter(a.model).convert(tmp, force=True)
    ct2 = ctranslate2.Translator(tmp, device="cpu", inter_threads=1)

    def ct2_generate(findings, beams, max_new):
        prompts = [render(f, meta.prompt_template) for f in findings]
        toks = [
            tok.convert_ids_to_tokens(tok(p, max_length=meta.max_source_tokens, truncation=True)["input_ids"])
            for p in prompts
        ]
        out = ct2.translate_batch(toks, beam_size=beams, max_decoding_length=max_new)
        return [tok.convert_tokens_to_string(r.hypotheses[0]).strip() for r in out]

    results = {}
    for beams in (4, 1):
        params = GenerationParams(num_beams=beams, max_new_tokens=32)
        t0 = time.perf_counter()
        hf = [g.candidates[0][0] for b in batches for g in generate(model, tok, meta, b, params)]
        t_hf = time.perf_counter() - t0
        t0 = time.perf_counter()
        ct = [t for b in batches for t in ct2_generate(b, beams, 32)]
        t_ct = time.perf_counter() - t0
        results[f"beam{beams}"] = {
            "transformers_s": t_hf,
            "ctranslate2_s": t_ct,
            "speedup": t_hf / t_ct,
            "identical_outputs": sum(x == y for x, y in zip(hf, ct, strict=True)),
            "n": len(hf),
        }
    print(f"{'search':<8} {'transformers s':>15} {'ctranslate2 s':>14} {'speedup':>8} {'identical':>10}")
    for k, r in results.items():
        print(
            f"{k:<8} {r['transformers_s']:>15.2f} {r['ctranslate2_s']:>14.2f} {r['speedup']:>7.2f}x "
            f"{r['identical_outputs']:>5}/{r['n']}"
        )
    atomic_write_json(
        a.out, {"command": " ".join(["python", *sys.argv]), "ctranslate2": ctranslate2.__version__, "results": results}
    )


if __name__ == "__main__":
    main()
