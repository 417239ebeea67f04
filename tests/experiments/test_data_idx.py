"""IDX reader/writer and the MNIST/FashionMNIST loaders on small synthetic IDX files."""
import gzip
import struct

import numpy as np
import pytest

from experiments import data, idx

FETCH_MNIST = "python -m experiments.data fetch mnist"
STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")


def idx_bytes(array, code=0x08):
    """Hand-written IDX encoding (independent of ``idx.write_idx``)."""
    array = np.asarray(array)
    head = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path, payload, gz):
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def make_set(folder, n_train=40, n_test=12, hw=(5, 4), gz=True, dotted=False):
    """Four IDX files; image k has every pixel equal to k mod 256 (an id), label k mod 10."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        ids = np.arange(n)
        images = np.broadcast_to((ids % 256).astype(np.uint8)[:, None, None], (n,) + hw).copy()
        labels = (ids % 10).astype(np.uint8)
        arrays[part] = (images, labels)
        for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{part}-{kind}-ubyte"
            if dotted:
                name = name.replace("-idx", ".idx")
            write(folder / (name + (".gz" if gz else "")), idx_bytes(arr), gz)
    return arrays


# ------------------------------------------------------------------------------------------------
# read_idx / write_idx
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("dtype,code", [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B),
                                        (np.int32, 0x0C), (np.float32, 0x0D),
                                        (np.float64, 0x0E)])
def test_idx_round_trip_every_type(tmp_path, rng, gz, dtype, code):
    array = (rng.standard_normal((3, 4, 2)) * 50).astype(dtype)
    path = tmp_path / ("a.idx" + (".gz" if gz else ""))
    digest = idx.write_idx(path, array)
    got = idx.read_idx(path)
    assert got.dtype == np.dtype(dtype) and got.shape == (3, 4, 2)
    assert np.array_equal(got, array)
    raw = idx_bytes(array, code)
    import hashlib
    assert digest == hashlib.sha256(raw).hexdigest()        # the writer's bytes are standard IDX
    assert (gzip.decompress(path.read_bytes()) if gz else path.read_bytes()) == raw


def test_idx_gzip_is_detected_by_content_not_name(tmp_path):
    path = write(tmp_path / "labels-without-suffix", idx_bytes(np.arange(7, dtype=np.uint8)), True)
    assert np.array_equal(idx.read_idx(path, dtype=np.uint8, ndim=1), np.arange(7))


def test_write_idx_rejects_unsupported_arrays(tmp_path):
    with pytest.raises(ValueError, match="`array` must be"):
        idx.write_idx(tmp_path / "x", np.zeros(3, dtype=np.uint32))
    with pytest.raises(ValueError, match="`array` must be"):
        idx.write_idx(tmp_path / "x", np.uint8(3))


def test_idx_bad_magic_names_the_path(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"P5\n28 28\n255\n" + bytes(100))     # a PGM image, not IDX
    with pytest.raises(data.IDXFormatError, match="not an IDX file: magic number") as err:
        idx.read_idx(path)
    assert str(path) in str(err.value)
    path.write_bytes(bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]))  # unknown type code 0x07
    with pytest.raises(data.IDXFormatError, match="magic number 0x00000701"):
        idx.read_idx(path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(data.IDXFormatError, match="shorter than the 4-byte magic"):
        idx.read_idx(path)


def test_idx_truncated_data_header_and_trailing_bytes(tmp_path):
    full = idx_bytes(np.zeros((4, 3, 3), dtype=np.uint8))
    path = write(tmp_path / "imgs", full[:-5], False)
    with pytest.raises(data.IDXFormatError, match=r"is truncated: .*shape \(4, 3, 3\).*36 data "
                                                  r"bytes.*holds 31"):
        idx.read_idx(path)
    write(path, full[:9], False)
    with pytest.raises(data.IDXFormatError, match="truncated inside its header"):
        idx.read_idx(path)
    write(path, full + b"\x00\x01", False)
    with pytest.raises(data.IDXFormatError, match="2 bytes after the data"):
        idx.read_idx(path)


def test_idx_truncated_gzip_names_the_path(tmp_path):
    packed = gzip.compress(idx_bytes(np.arange(5000, dtype=np.int32)))
    path = tmp_path / "cut.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(data.IDXFormatError, match="damaged gzip") as err:
        idx.read_idx(path)
    assert str(path) in str(err.value)


def test_idx_wrong_type_or_rank_is_refused(tmp_path):
    path = write(tmp_path / "f", idx_bytes(np.zeros((2, 2), dtype=np.float32), 0x0D), False)
    with pytest.raises(data.IDXFormatError, match="holds float32 data.*expected uint8"):
        idx.read_idx(path, dtype=np.uint8)
    with pytest.raises(data.IDXFormatError, match="rank 2.*expected rank 3"):
        idx.read_idx(path, ndim=3)


# ------------------------------------------------------------------------------------------------
# Loaders on synthetic folders
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz,dotted", [(True, False), (False, False), (False, True)],
                         ids=["gz", "raw", "dotted-names"])
def test_loader_reads_a_data_dir(tmp_path, gz, dotted):
    arrays = make_set(tmp_path / "d", gz=gz, dotted=dotted)
    split = data.load_mnist(data_dir=tmp_path / "d")
    assert isinstance(split, data.ImageSplit)
    assert split.x_train.shape == (40, 1, 5, 4) and split.x_test.shape == (12, 1, 5, 4)
    assert split.x_train.dtype == np.float32 and split.y_train.dtype == np.int64
    assert split.x_val.shape == (0, 1, 5, 4) and split.y_val.shape == (0,)
    np.testing.assert_array_equal(split.x_train[:, 0], arrays["train"][0] / np.float32(255))
    np.testing.assert_array_equal(split.y_test, arrays["t10k"][1])
    # The first four fields keep Split's order.
    assert np.array_equal(split[3], split.y_test)


def test_loader_layouts_dtypes_and_normalize(tmp_path):
    arrays = make_set(tmp_path)
    raw = data.load_fashion_mnist(data_dir=tmp_path, dtype=np.uint8, layout="nhw")
    assert raw.x_train.dtype == np.uint8 and raw.x_train.flags.writeable
    assert np.array_equal(raw.x_train, arrays["train"][0])
    flat = data.load_fashion_mnist(data_dir=tmp_path, dtype=np.float64, layout="flat")
    assert flat.x_test.shape == (12, 20) and flat.x_test.dtype == np.float64
    norm = data.load_fashion_mnist(data_dir=tmp_path, normalize=True)
    mean, std = data.DATASETS["fashion-mnist"].mean, data.DATASETS["fashion-mnist"].std
    np.testing.assert_allclose(norm.x_train, (arrays["train"][0][:, None] / 255 - mean) / std,
                               rtol=1e-5, atol=1e-5)


def test_split_train_or_test_reads_only_that_part(tmp_path):
    make_set(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    train = data.load_mnist("train", data_dir=tmp_path)
    assert train.x_train.shape[0] == 40 and train.x_test.shape == (0, 1, 5, 4)
    with pytest.raises(data.DataMissingError, match=r"missing t10k-images-idx3-ubyte\[\.gz\]"):
        data.load_mnist("test", data_dir=tmp_path)


def test_validation_and_subsets_are_seeded_disjoint_and_ordered(tmp_path):
    make_set(tmp_path, n_train=200, n_test=50)
    kw = dict(data_dir=tmp_path, dtype=np.uint8, layout="flat")
    a = data.load_mnist(n_train=100, n_val=30, n_test=20, seed=4, **kw)
    b = data.load_mnist(n_train=100, n_val=30, n_test=20, seed=4, **kw)
    c = data.load_mnist(n_train=100, n_val=30, n_test=20, seed=5, **kw)
    for x, y in zip(a, b, strict=False):
        assert np.array_equal(x, y)
    assert not np.array_equal(a.x_val, c.x_val)
    train_ids, val_ids = a.x_train[:, 0].astype(int), a.x_val[:, 0].astype(int)
    assert len(train_ids) == 100 and len(val_ids) == 30 and a.x_test.shape[0] == 20
    assert not set(train_ids) & set(val_ids)                 # disjoint
    assert np.all(np.diff(train_ids) > 0) and np.all(np.diff(val_ids) > 0)   # file order kept
    assert np.array_equal(a.y_train, train_ids % 10)         # labels follow their images
    # A fraction works for the validation size; validation alone keeps the rest for training.
    d = data.load_mnist(n_val=0.25, **kw)
    assert d.x_val.shape[0] == 50 and d.x_train.shape[0] == 150 and d.x_test.shape[0] == 50


@pytest.mark.parametrize("kwargs,match", [
    (dict(split="valid"), "`split` must be one of"),
    (dict(layout="nhwc"), "`layout` must be one of"),
    (dict(dtype=np.int32), "`dtype` must be a float type"),
    (dict(dtype=np.uint8, normalize=True), "`normalize=True` needs a float `dtype`"),
    (dict(n_train=41), r"`n_train` must be in \[1, 40\]"),
    (dict(n_train=0), r"`n_train` must be in \[1, 40\]"),
    (dict(n_train=2.5), "`n_train` must be a positive int"),
    (dict(n_val=40), r"`n_val` must be in \[0, 39\]"),
    (dict(n_val=30, n_train=11), r"`n_train` must be in \[1, 10\]"),
    (dict(n_test=13), r"`n_test` must be in \[1, 12\]"),
    (dict(split="test", n_val=5), "split='test' does not load"),
    (dict(split="train", n_test=5), "split='train' does not load"),
])
def test_argument_errors_name_the_argument(tmp_path, kwargs, match):
    make_set(tmp_path)
    with pytest.raises(ValueError, match=match):
        data.load_mnist(data_dir=tmp_path, **kwargs)


def test_wrong_label_count_names_both_files(tmp_path):
    make_set(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    write(labels, idx_bytes(np.zeros(39, dtype=np.uint8)), True)
    with pytest.raises(data.IDXFormatError, match="holds 39 labels but .* holds 40 images") as err:
        data.load_mnist(data_dir=tmp_path)
    assert str(labels) in str(err.value)


def test_labels_out_of_range_and_swapped_files(tmp_path):
    make_set(tmp_path)
    write(tmp_path / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.full(12, 10, np.uint8)), True)
    with pytest.raises(data.IDXFormatError, match="holds label 10; MNIST labels are 0..9"):
        data.load_mnist(data_dir=tmp_path)
    make_set(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(
        (tmp_path / "train-images-idx3-ubyte.gz").read_bytes())
    with pytest.raises(data.IDXFormatError, match="rank 3 .*expected rank 1"):
        data.load_mnist(data_dir=tmp_path)


def test_truncated_file_in_a_data_dir_names_it(tmp_path):
    make_set(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(data.IDXFormatError, match="is truncated") as err:
        data.load_fashion_mnist(data_dir=tmp_path)
    assert str(path) in str(err.value)


def test_missing_data_dir_names_the_fetch_command(tmp_path):
    with pytest.raises(data.DataMissingError) as err:
        data.load_mnist(data_dir=tmp_path / "nowhere")
    msg = str(err.value)
    assert "nowhere" in msg and FETCH_MNIST in msg and "train-images-idx3-ubyte[.gz]" in msg
    assert isinstance(err.value, FileNotFoundError)
    # A folder named like the cache's sub-folder: the command fetches into its parent.
    (tmp_path / "fashion-mnist").mkdir()
    with pytest.raises(data.DataMissingError,
                       match=r"fetch fashion-mnist --cache '[^']*'") as err:
        data.load_fashion_mnist(data_dir=tmp_path / "fashion-mnist")
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize("loader,name", [(data.load_mnist, "mnist"),
                                         (data.load_fashion_mnist, "fashion-mnist")])
def test_missing_cache_names_the_fetch_command(tmp_path, monkeypatch, loader, name):
    monkeypatch.setenv("ADJOINTCORE_DATA", str(tmp_path / "cache"))
    assert data.dataset_dir(name) == tmp_path / "cache" / name
    with pytest.raises(data.DataMissingError) as err:
        loader()
    msg = str(err.value)
    assert f"`python -m experiments.data fetch {name}`" in msg
    assert str(tmp_path / "cache" / name) in msg and "ADJOINTCORE_DATA" in msg


def test_data_root_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("ADJOINTCORE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.data_root() == tmp_path / "adjointcore" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.data_root().parts[-3:] == (".cache", "adjointcore", "data")
    assert data.data_root(tmp_path / "x") == tmp_path / "x"
    with pytest.raises(ValueError, match="`name` must be one of"):
        data.dataset_dir("cifar10")


def test_checksums_are_verified_for_the_cache_and_on_request(tmp_path, monkeypatch):
    monkeypatch.setenv("ADJOINTCORE_DATA", str(tmp_path))
    make_set(tmp_path / "mnist")                               # not the real MNIST
    with pytest.raises(data.DataChecksumError, match=r"fetch mnist --force") as err:
        data.load_mnist()
    assert "train-images-idx3-ubyte" in str(err.value)
    assert data.load_mnist(verify=False).x_train.shape == (40, 1, 5, 4)
    assert data.load_mnist(data_dir=tmp_path / "mnist").x_train.shape == (40, 1, 5, 4)
    with pytest.raises(data.DataChecksumError, match="verify=False"):
        data.load_mnist(data_dir=tmp_path / "mnist", verify=True)
