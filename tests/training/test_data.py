import pickle
import struct
from urllib.error import URLError

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.datasets as tvd

from dm_search.training import data as data_mod
from dm_search.training.config import DataConfig


def _cfg(root, **kw):
    return DataConfig(root=str(root), **kw)


# ------------------------------------------------------------ files in the real on-disk formats
def _write_cifar(root, k, n_train=50, n_test=20):
    rng = np.random.default_rng(0)
    hundred = k == 100
    folder = root / ("cifar100/cifar-100-python" if hundred else "cifar10/cifar-10-batches-py")
    folder.mkdir(parents=True)
    label_key = "fine_labels" if hundred else "labels"

    def batch(n):
        return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                label_key: rng.integers(0, k, n).tolist()}

    if hundred:
        files = {"train": batch(n_train), "test": batch(n_test)}
        meta = ("meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    else:
        files = {f"data_batch_{i}": batch(n_train // 5) for i in range(1, 6)}
        files["test_batch"] = batch(n_test)
        meta = ("batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    files[meta[0]] = meta[1]
    for name, obj in files.items():
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f)


def _write_idx(root, folder, n_train=40, n_test=10):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 2049, n) + labels.tobytes())


def _write_svhn(root, n_train=30, n_test=12):
    folder = root / "svhn"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    for split, n in (("train", n_train), ("test", n_test)):
        scipy.io.savemat(folder / f"{split}_32x32.mat", {
            "X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
            "y": rng.integers(1, 11, (n, 1)).astype(np.uint8),  # 10 stands for the digit 0
        })


@pytest.fixture
def no_checksums(monkeypatch):
    """The files the tests write cannot match the real archives' md5 sums."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.svhn as svhn

    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(svhn, "check_integrity", lambda *a, **k: True)


@pytest.mark.parametrize(
    ("name", "write", "k", "shape", "n_train"),
    [
        ("cifar10", lambda r: _write_cifar(r, 10), 10, (3, 32, 32), 50),
        ("cifar100", lambda r: _write_cifar(r, 100), 100, (3, 32, 32), 50),
        ("mnist", lambda r: _write_idx(r, "mnist/MNIST"), 10, (1, 28, 28), 40),
        ("fashion_mnist", lambda r: _write_idx(r, "fashion_mnist/FashionMNIST"), 10,
         (1, 28, 28), 40),
        ("svhn", _write_svhn, 10, (3, 32, 32), 30),
    ],
)
def test_torchvision_datasets_load_from_disk(tmp_path, no_checksums, name, write, k, shape,
                                             n_train):
    write(tmp_path)
    raw = data_mod.load_raw(_cfg(tmp_path, name=name, download=False))
    assert raw.num_classes == k
    assert tuple(raw.x_train.shape) == (n_train, *shape)
    assert raw.x_train.dtype == torch.float32 and raw.y_train.dtype == torch.int64
    assert int(raw.y_train.max()) < k and int(raw.y_train.min()) >= 0
    # standardised per channel on the training set
    assert raw.x_train.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    prepared = data_mod.prepare_data(
        _cfg(tmp_path, name=name, download=False,
             noise={"kind": "asymmetric", "rate": 0.5}, val_fraction=0.2))
    assert len(prepared.y_train) + len(prepared.y_val) == n_train
    if name in ("cifar10", "cifar100", "svhn"):
        assert prepared.crop_pad == 4


def test_missing_torchvision_files_say_where_to_put_them(tmp_path):
    with pytest.raises(data_mod.DatasetUnavailable,
                       match=r"Put cifar-10-batches-py/.* in .*cifar10"):
        data_mod.load_raw(_cfg(tmp_path, name="cifar10", download=False))


def test_failed_download_says_what_to_do(tmp_path, monkeypatch):
    def offline(self, *a, **k):
        raise URLError("no network")

    monkeypatch.setattr(tvd.CIFAR100, "download", offline)
    with pytest.raises(data_mod.DatasetUnavailable, match=r"downloading it failed.*copy"):
        data_mod.load_raw(_cfg(tmp_path, name="cifar100", download=True))


def test_mnist1d_is_generated_offline_deterministic_and_cached(data_root):
    cfg = _cfg(data_root, name="mnist1d", num_samples=500)
    a = data_mod.load_raw(cfg)
    assert tuple(a.x_train.shape) == (400, 1, 40) and tuple(a.x_test.shape) == (100, 1, 40)
    assert (data_root / "mnist1d" / "mnist1d_n500_seed42.pt").is_file()
    b = data_mod.load_raw(cfg)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)


def test_digits_offline():
    raw = data_mod.load_raw(DataConfig(name="digits"))
    assert tuple(raw.x_train.shape[1:]) == (1, 8, 8)
    assert len(raw.y_train) + len(raw.y_test) == 1797


def test_npz_dataset(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=rng.integers(0, 255, (30, 16, 16, 3), dtype=np.uint8),
             y_train=np.arange(30) % 3, x_test=rng.integers(0, 255, (9, 16, 16, 3)),
             y_test=np.arange(9) % 3)
    raw = data_mod.load_raw(DataConfig(name="npz", path=str(path)))
    assert tuple(raw.x_train.shape) == (30, 3, 16, 16) and raw.num_classes == 3
    np.savez(tmp_path / "bad.npz", x_train=np.zeros(3))
    with pytest.raises(ValueError, match="lacks x_test, y_test, y_train"):
        data_mod.load_raw(DataConfig(name="npz", path=str(tmp_path / "bad.npz")))


def test_paper_split_validation_is_clean_and_test_untouched(data_root):
    cfg = _cfg(data_root, name="mnist1d", num_samples=1000,
               noise={"kind": "symmetric", "rate": 0.4}, val_fraction=0.2, seed=3)
    raw = data_mod.load_raw(cfg)
    d = data_mod.prepare_data(cfg)
    assert len(d.y_val) == 160 and len(d.y_train) == 640
    assert d.noise_rate == pytest.approx(float(d.corrupted.float().mean()))
    assert 0.33 < d.noise_rate < 0.47
    assert torch.equal(d.corrupted, d.y_train != d.y_train_clean)
    # Validation labels are the dataset's own: find each validation example in the raw set.
    rows = {tuple(x.flatten().tolist()): int(y) for x, y in zip(raw.x_train, raw.y_train,
                                                                 strict=True)}
    assert all(rows[tuple(x.flatten().tolist())] == int(y)
               for x, y in zip(d.x_val, d.y_val, strict=True))
    assert torch.equal(d.x_test, raw.x_test) and torch.equal(d.y_test, raw.y_test)
    # Same seed, same split and noise; the fingerprint tells them apart.
    again = data_mod.prepare_data(cfg)
    assert torch.equal(again.y_train, d.y_train) and again.fingerprint == d.fingerprint
    other = data_mod.prepare_data(DataConfig(**{**cfg.model_dump(), "seed": 4}))
    assert other.fingerprint != d.fingerprint


def test_validation_split_does_not_depend_on_the_noise(data_root):
    base = _cfg(data_root, name="mnist1d", num_samples=1000, seed=1)
    noisy = data_mod.prepare_data(
        DataConfig(**{**base.model_dump(), "noise": {"kind": "symmetric", "rate": 0.6}}))
    clean = data_mod.prepare_data(base)
    assert torch.equal(noisy.x_val, clean.x_val)
    assert torch.equal(noisy.y_train_clean, clean.y_train)


def test_imbalance_and_noise_from_file(data_root, tmp_path):
    cfg = _cfg(data_root, name="mnist1d", num_samples=1000, imbalance={"ratio": 10.0})
    d = data_mod.prepare_data(cfg)
    counts = torch.bincount(torch.cat([d.y_train_clean, d.y_val]), minlength=10)
    assert counts.max() >= 9 * counts.min()
    raw = data_mod.load_raw(cfg)
    flipped = raw.y_train.clone()
    flipped[:100] = (flipped[:100] + 1) % 10
    np.save(tmp_path / "noisy.npy", flipped.numpy())
    d = data_mod.prepare_data(_cfg(data_root, name="mnist1d", num_samples=1000, val_fraction=0.0,
                                   noise={"kind": "file", "path": str(tmp_path / "noisy.npy")}))
    assert d.noise_rate == pytest.approx(100 / 800)
    np.save(tmp_path / "short.npy", flipped[:10].numpy())
    with pytest.raises(ValueError, match="must be aligned one to one"):
        data_mod.prepare_data(_cfg(data_root, name="mnist1d", num_samples=1000,
                                   noise={"kind": "file", "path": str(tmp_path / "short.npy")}))


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match="Known datasets: cifar10, cifar100, digits"):
        data_mod.get("imagenet")




def _write_images(root, per_class, classes=("cat", "dog", "eel"), size=(8, 8)):
    """Class-per-folder PNGs: class c's images are bright in colour channel c."""
    from PIL import Image

    g = np.random.default_rng(0)
    for split, n in per_class.items():
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = g.integers(0, 90, (*size, 3), dtype=np.uint8)
                img[..., c] += 150
                Image.fromarray(img).save(folder / f"{i}.png")


@pytest.mark.slow  # writes 300 images and trains with DataLoader worker processes
def test_imagefolder_streams_class_folders_from_disk_and_trains(tmp_path):
    from dm_search.training.config import TrialConfig
    from dm_search.training.trainer import run_trial

    _write_images(tmp_path / "pics", {"train": 80, "test": 20})  # 300 small PNGs
    cfg = TrialConfig.from_dict({
        "data": {"name": "imagefolder", "path": str(tmp_path / "pics"), "workers": 2,
                 "noise": {"kind": "symmetric", "rate": 0.2}},
        "model": {"name": "cnn2d", "options": {"width": 8}},
        "optim": {"epochs": 3, "batch_size": 32, "lr": 0.05}})
    data = data_mod.prepare_data(cfg.data)
    assert data.streamed and data.input_shape == (3, 8, 8) and data.num_classes == 3
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (192, 48, 60)
    assert 0.1 < data.noise_rate < 0.3
    # Only the labels are held in memory; the split, the noise and the provenance work on them.
    again = data_mod.prepare_data(cfg.data)
    assert again.fingerprint == data.fingerprint and torch.equal(again.y_train, data.y_train)
    r = run_trial(cfg, data=data)
    assert r.epochs_completed == 3 and r.final["test_acc"] > 0.8
    assert 0.0 <= r.final["memorised"] <= 1.0


def test_imagefolder_resizes_and_says_what_its_folder_lacks(tmp_path):
    _write_images(tmp_path / "a", {"train": 4, "val": 2}, size=(12, 10))
    cfg = DataConfig(name="imagefolder", path=str(tmp_path / "a"), val_fraction=0.0,
                     options={"image_size": 6})
    data = data_mod.prepare_data(cfg)
    assert data.input_shape == (3, 6, 6) and len(data.y_test) == 6  # val/ serves as test
    with pytest.raises(ValueError, match=r"needs train/ and test/"):
        data_mod.check_available(DataConfig(name="imagefolder", path=str(tmp_path / "a" /
                                                                        "train")))
    with pytest.raises(ValueError, match=r"needs data\.path"):
        data_mod.check_available(DataConfig(name="imagefolder"))
    with pytest.raises(ValueError, match="unknown option"):
        data_mod.prepare_data(cfg.model_copy(update={"options": {"size": 6}}))
    _write_images(tmp_path / "b", {"train": 2}, classes=("cat", "dog"))
    _write_images(tmp_path / "b", {"test": 2}, classes=("cat", "emu"))
    with pytest.raises(ValueError, match="must be the same"):
        data_mod.prepare_data(DataConfig(name="imagefolder", path=str(tmp_path / "b")))
