import numpy as np
import pytest
import torch

from dm_search.training import noise


def _labels(n=20_000, k=10, seed=0):
    return torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_symmetric_noise_moves_labels_to_other_classes_uniformly():
    y = _labels()
    out = noise.symmetric_noise(y, 10, 0.4, generator=_g())
    assert out.rate == pytest.approx(0.4, abs=0.015)
    assert torch.equal(out.corrupted, out.labels != y)
    assert (out.labels[out.corrupted] != y[out.corrupted]).all()
    # Each of the 9 other classes receives about 1/9 of the flips from class 0.
    moved = out.labels[out.corrupted & (y == 0)]
    counts = torch.bincount(moved, minlength=10).float()
    assert counts[0] == 0
    assert (counts[1:] / counts.sum() - 1 / 9).abs().max() < 0.03


def test_noise_is_seeded_and_pure():
    y = _labels()
    before = y.clone()
    a = noise.symmetric_noise(y, 10, 0.3, generator=_g(5))
    b = noise.symmetric_noise(y, 10, 0.3, generator=_g(5))
    c = noise.symmetric_noise(y, 10, 0.3, generator=_g(6))
    assert torch.equal(a.labels, b.labels)
    assert not torch.equal(a.labels, c.labels)
    assert torch.equal(y, before)


def test_cifar10_asymmetric_map():
    y = _labels()
    out = noise.asymmetric_noise(y, 10, 0.4, noise.CIFAR10_ASYMMETRIC, generator=_g())
    flipped_from = set(y[out.corrupted].tolist())
    assert flipped_from == {9, 2, 4, 3, 5}
    for src, dst in noise.CIFAR10_ASYMMETRIC.items():
        moved = out.labels[out.corrupted & (y == src)]
        assert (moved == dst).all()
        assert (out.corrupted[y == src].float().mean() - 0.4).abs() < 0.04


def test_cifar100_pairs_swap_within_superclasses():
    mapping = noise.cifar100_pair_map(generator=_g())
    assert len(mapping) == 40  # two subclasses in each of 20 superclasses
    coarse = noise.CIFAR100_COARSE
    for a, b in mapping.items():
        assert mapping[b] == a and a != b
        assert coarse[a] == coarse[b]
    assert sorted(np.bincount(coarse).tolist()) == [5] * 20


def test_pairflip_for_any_dataset():
    y = _labels(k=7)
    out = noise.asymmetric_noise(y, 7, 0.3, noise.pairflip_map(7), generator=_g())
    assert torch.equal(out.labels[out.corrupted], (y[out.corrupted] + 1) % 7)


def test_labels_from_files(tmp_path):
    labels = np.arange(12) % 4
    np.save(tmp_path / "a.npy", labels)
    np.savez(tmp_path / "b.npz", worse_label=labels, aggre_label=labels[::-1])
    torch.save({"worse_label": torch.as_tensor(labels)}, tmp_path / "c.pt")
    assert noise.labels_from_file(tmp_path / "a.npy").tolist() == labels.tolist()
    assert noise.labels_from_file(tmp_path / "b.npz", key="aggre_label").tolist() == (
        labels[::-1].tolist())
    assert noise.labels_from_file(tmp_path / "c.pt", key="worse_label").tolist() == labels.tolist()
    with pytest.raises(ValueError, match="choose one with key: aggre_label, worse_label"):
        noise.labels_from_file(tmp_path / "b.npz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        noise.labels_from_file(tmp_path / "missing.npy")


def test_a_label_file_that_would_run_code_is_refused_before_it_runs(
        tmp_path, data_root, hostile_pt):
    from dm_search.training.data import DataConfig, prepare_data

    path = tmp_path / "CIFAR-10_human.pt"
    marker = hostile_pt(path)
    cfg = DataConfig(name="digits", noise={"kind": "file", "path": str(path)},
                     val_fraction=0.0, root=str(data_root))
    with pytest.raises(ValueError, match=r"noisy-label file .*CIFAR-10_human\.pt cannot be "
                                         r"loaded safely .*unpickling can run code"):
        prepare_data(cfg)
    with pytest.raises(ValueError, match="cannot be loaded safely"):
        noise.labels_from_file(path, key="worse_label")
    assert not marker.exists()
    torch.load(path, weights_only=False).close()  # the file is live: loading it ran its code
    assert marker.exists()


def test_cifar_n_style_numpy_arrays_in_a_pt_file_still_load(tmp_path):
    # CIFAR-N's .pt files hold NumPy arrays, which plain weights_only loading refuses.
    labels = np.arange(12) % 4
    for dtype in (np.int64, np.int32, np.uint8):
        torch.save({"worse_label": labels.astype(dtype), "clean_label": labels[::-1].copy()},
                   tmp_path / "human.pt")
        got = noise.labels_from_file(tmp_path / "human.pt", key="worse_label")
        assert got.dtype == torch.int64 and got.tolist() == labels.tolist()
    # Object arrays hold pickled Python objects: refused like any other object.
    torch.save({"worse_label": np.array([1, "2"], dtype=object)}, tmp_path / "objects.pt")
    with pytest.raises(ValueError, match=r"objects\.pt cannot be loaded safely"):
        noise.labels_from_file(tmp_path / "objects.pt", key="worse_label")


def test_a_damaged_or_foreign_label_file_is_refused_naming_it(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"worse_label": torch.arange(1000) % 10}, good)
    cases = {
        "empty.pt": (b"", r"empty\.pt is empty"),
        "noise.pt": (bytes(range(256)) * 4, r"noise\.pt cannot be loaded safely"),
        "cut.pt": (good.read_bytes()[: good.stat().st_size // 2],
                   r"cut\.pt cannot be loaded safely"),
    }
    for name, (content, match) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=match):
            noise.labels_from_file(tmp_path / name)
    torch.save("not labels", tmp_path / "text.pt")
    with pytest.raises(ValueError, match=r"text\.pt holds str, not an array of integer labels"):
        noise.labels_from_file(tmp_path / "text.pt")


def test_long_tail_indices():
    y = torch.arange(10).repeat_interleave(500)
    idx = noise.long_tail_indices(y, 10, 100.0, generator=_g())
    counts = torch.bincount(y[idx], minlength=10)
    assert counts[0] == 500 and counts[-1] == 5
    assert (counts[:-1] >= counts[1:]).all()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: noise.symmetric_noise(torch.tensor([0, 1]), 2, 1.5, generator=_g()), "rate"),
        (lambda: noise.symmetric_noise(torch.tensor([0, 5]), 3, 0.1, generator=_g()), r"\[0, 2\]"),
        (lambda: noise.long_tail_indices(torch.tensor([0, 1]), 2, 0.5, generator=_g()), ">= 1"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_symmetric_noise_at_or_past_chance_is_refused():
    import torch

    from dm_search.training.noise import symmetric_noise

    labels = torch.arange(10).repeat(10)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"rate 0.9 with 10 classes leaves the labels no "
                                         r"information.*below 0.9"):
        symmetric_noise(labels, 10, 0.9, generator=g)
    assert symmetric_noise(labels, 10, 0.89, generator=g).rate > 0.5
