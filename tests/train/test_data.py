import numpy as np

from radreport.modeling import load_tokenizer
from radreport.schema import load_examples
from train.data import IGNORE_INDEX, BatchOrder, Collator, Seq2SeqRows, padding_stats


def test_batch_order_depends_only_on_seed_and_epoch():
    lengths = np.random.default_rng(0).integers(10, 200, 1000)
    a = BatchOrder(lengths, 8, 2, seed=1).for_epoch(3).batches()
    b = BatchOrder(lengths, 8, 2, seed=1).for_epoch(3).batches()
    c = BatchOrder(lengths, 8, 2, seed=1).for_epoch(4).batches()
    assert a == b and a != c
    flat = sorted(i for batch in a for i in batch)
    assert flat == list(range(1000))  # every example once an epoch


def test_length_grouping_puts_similar_lengths_in_one_step():
    lengths = np.random.default_rng(0).integers(10, 500, 4096)
    grouped = BatchOrder(lengths, 8, 2, seed=0, mode="length_grouped", group_size=64).batches()
    random_ = BatchOrder(lengths, 8, 2, seed=0, mode="dynamic").batches()

    def fill(batches):  # real tokens / padded positions, padding each batch to its longest
        return sum(lengths[b].sum() for b in batches) / sum(lengths[b].max() * len(b) for b in batches)

    assert fill(grouped) > 0.95 and fill(random_) < 0.7
    # the two batches of one step (one per process) have similar lengths
    steps = [(grouped[i], grouped[i + 1]) for i in range(0, len(grouped) - 1, 2)]
    spread = np.median([abs(lengths[x].max() - lengths[y].max()) for x, y in steps])
    assert spread < 20


def test_collator_pads_to_longest_or_fixed(tiny_model_dir, sample_dir):
    tok = load_tokenizer(tiny_model_dir)
    rows = Seq2SeqRows(load_examples(sample_dir / "dev1.json")[:4], tok, "instruction", 256, 64)
    dynamic = Collator(tok.pad_token_id)([rows[i] for i in range(4)])
    assert dynamic["input_ids"].shape[1] % 8 == 0
    assert dynamic["input_ids"].shape[1] < max(len(rows.input_ids[i]) for i in range(4)) + 8
    assert (dynamic["labels"] == IGNORE_INDEX).any() or len({len(x) for x in rows.labels}) == 1
    fixed = Collator(tok.pad_token_id, fixed_source=512, fixed_target=128)([rows[i] for i in range(4)])
    assert fixed["input_ids"].shape == (4, 512) and fixed["labels"].shape == (4, 128)
    real, total = padding_stats(fixed, tok.pad_token_id)
    assert real / total < 0.3  # what padding to max length costs on radiology-length text
