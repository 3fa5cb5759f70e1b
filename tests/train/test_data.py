import numpy as np
import pytest

from radreport.modeling import load_tokenizer
from radreport.prompt import render
from radreport.schema import load_examples
from train.data import IGNORE_INDEX, BatchOrder, Collator, Seq2SeqRows, padding_stats

MODES = ("length_grouped", "dynamic", "max_length")


@pytest.mark.parametrize("mode", MODES)
def test_batch_order_len_is_what_iteration_yields_for_every_world_size(mode):
    rng = np.random.default_rng(0)
    for n in (1, 7, 63, 64, 100, 1000, 1537):
        lengths = rng.integers(10, 500, n)
        for replicas in range(1, 9):
            for per_device in (1, 3, 8):
                for group_size in (1, 4, 64):
                    order = BatchOrder(lengths, per_device, replicas, seed=3, mode=mode, group_size=group_size)
                    batches = list(order.for_epoch(2))
                    assert len(order) == len(batches), (n, replicas, per_device, group_size)
                    assert sorted(i for b in batches for i in b) == list(range(n))  # every example once an epoch
                    assert max(len(b) for b in batches) <= per_device


def test_batch_order_depends_only_on_seed_and_epoch():
    lengths = np.random.default_rng(0).integers(10, 200, 1000)
    a = BatchOrder(lengths, 8, 2, seed=1).for_epoch(3).batches()
    c = BatchOrder(lengths, 8, 2, seed=1).for_epoch(4).batches()
    d = BatchOrder(lengths, 8, 2, seed=2).for_epoch(3).batches()
    assert a != c and a != d
    # a resumed run builds a new sampler in a new process, for the epoch it stopped in, and skips what was done
    order = BatchOrder(lengths, 8, 2, seed=1)
    for epoch in range(5):  # the epochs the uninterrupted run went through first change nothing
        order.for_epoch(epoch).batches()
    resumed = BatchOrder(lengths, 8, 2, seed=1).for_epoch(3)
    assert list(order.for_epoch(3)) == a == list(resumed)


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


def test_tokenised_rows_match_the_tokenizer(tiny_model_dir, sample_dir):
    tok = load_tokenizer(tiny_model_dir)
    examples = load_examples(sample_dir / "dev1.json")[:5]
    rows = Seq2SeqRows.tokenize(examples, tok, "instruction", 256, 12)
    assert len(rows) == 5
    for i, e in enumerate(examples):
        row, source, target = rows[i]
        assert row == i
        assert (
            source == tok(render(e.findings, "instruction", e.background), max_length=256, truncation=True)["input_ids"]
        )
        assert target == tok(text_target=e.impression, max_length=12, truncation=True)["input_ids"]
        assert rows.length_keys[i] == (len(target) // 8) * 4096 + len(source)
    assert rows.study_ids([3, 0]) == [examples[3].study_id, examples[0].study_id]
    assert rows.__getitems__([4, 1]) == [rows[4], rows[1]]


def test_collator_pads_to_longest_or_fixed(tiny_model_dir, sample_dir):
    tok = load_tokenizer(tiny_model_dir)
    rows = Seq2SeqRows.tokenize(load_examples(sample_dir / "dev1.json")[:4], tok, "instruction", 256, 64)
    items = [rows[i] for i in range(4)]
    longest_source = max(len(s) for _, s, _ in items)
    longest_target = max(len(t) for _, _, t in items)
    dynamic = Collator(tok.pad_token_id)(items)
    assert dynamic["input_ids"].shape == (4, -(-longest_source // 8) * 8)
    assert dynamic["labels"].shape == (4, -(-longest_target // 8) * 8)
    assert dynamic["row"].tolist() == [0, 1, 2, 3]
    for i, (_, source, target) in enumerate(items):
        assert dynamic["input_ids"][i, : len(source)].tolist() == source
        assert dynamic["attention_mask"][i].sum().item() == len(source)
        assert dynamic["labels"][i, : len(target)].tolist() == target
        assert (dynamic["labels"][i, len(target) :] == IGNORE_INDEX).all()
    fixed = Collator(tok.pad_token_id, fixed_source=512, fixed_target=128)(items)
    assert fixed["input_ids"].shape == (4, 512) and fixed["labels"].shape == (4, 128)
    real, total = padding_stats(fixed, tok.pad_token_id)
    assert real == sum(len(s) + len(t) for _, s, t in items) and total == 4 * (512 + 128)
    assert real / total < 0.3  # what padding to max length costs on radiology-length text
