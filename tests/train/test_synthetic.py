from train.synthetic import write_sample


def test_bundled_sample_is_what_the_generator_writes(sample_dir, tmp_path):
    """The shipped sample is generated, not hand-edited: regenerating gives the same bytes."""
    write_sample(tmp_path)
    shipped = sorted(p.relative_to(sample_dir) for p in sample_dir.rglob("*") if p.is_file())
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert shipped == fresh
    for rel in shipped:
        assert (sample_dir / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel
