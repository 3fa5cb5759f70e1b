import torch

from radreport.modeling import ModelMeta, load_model, load_tokenizer, read_meta


def test_tiny_model_builds_saves_reloads_and_generates(tiny_model_dir):
    files = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "radreport.json"} <= files
    tok = load_tokenizer(tiny_model_dir)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    text = "There is a small left pleural effusion. ___ year old man."
    ids = tok(text)["input_ids"]
    assert ids[-1] == tok.eos_token_id and tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == text
    model = load_model(tiny_model_dir)
    a = load_model(tiny_model_dir)
    for (n, p), (_, q) in zip(model.named_parameters(), a.named_parameters(), strict=True):
        assert torch.equal(p, q), n
    batch = tok(["Lungs are clear.", "Small right pneumothorax."], return_tensors="pt", padding=True)
    out = model.generate(**batch, num_beams=2, max_new_tokens=5)
    assert out.shape[0] == 2 and out.shape[1] <= 6
    assert read_meta(tiny_model_dir) == ModelMeta(trained_by=read_meta(tiny_model_dir).trained_by)
