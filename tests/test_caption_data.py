"""Caption datasets in each format, split rules, bad rows, and the decoded-image cache (fixtures written here)."""

import json
import os
import tracemalloc
import zipfile

import numpy as np
import pytest
from PIL import Image, ImageOps

from charrnn.caption.data import cache_images, read_captions
from charrnn.core.errors import CharRNNError
from charrnn.vision.dataset import open_member

LANCZOS = Image.Resampling.LANCZOS


def save_image(path, w=8, h=8, seed=0, **kw):
    """Random pixels, so that any mix-up of images, resizing or orientation changes them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, **kw)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)


GENERIC = {"a.png": (8, 8), "images/b.jpg": (40, 30), "images/c.png": (16, 12), "images/sub/d.jpg": (20, 20),
           "e.png": (12, 8)}
CAPTIONS_TSV = ("a.png\ta red square\n"
                "images/b.jpg\ta photo\n"
                "a.png\tanother reference\n"
                "images/c.png\tsee\n"
                "images/sub/d.jpg\tdee\n"
                "e.png\tee\n")


def make_generic(root, captions=CAPTIONS_TSV):
    for k, (name, (w, h)) in enumerate(GENERIC.items()):
        save_image(root / name, w, h, seed=k)
    write(root / "captions.tsv", captions)
    return root


def make_many(root, n=20):
    """n tiny images with two references each."""
    lines = []
    for k in range(n):
        save_image(root / f"{k:02d}.png", 2, 2, seed=k)
        lines += [f"{k:02d}.png\tpicture {k}", f"{k:02d}.png\talso {k}"]
    write(root / "captions.tsv", "\n".join(lines) + "\n")
    return root


def zip_folder(folder, zip_path, inside):
    with zipfile.ZipFile(zip_path, "w") as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, f"{inside}/{p.relative_to(folder).as_posix()}")
    return zip_path


# ----- formats ---------------------------------------------------------------------------------------------

def test_generic_directory_keeps_every_reference_and_where_it_came_from(tmp_path):
    data = read_captions(make_generic(tmp_path / "ds"), val_frac=0)
    assert data.format == "tsv" and data.val is None and data.skipped == []
    assert data.train.files == list(GENERIC)  # order of first mention, subfolders included
    assert data.train.captions[0] == ["a red square", "another reference"]
    assert data.train.captions[1] == ["a photo"]
    assert data.train.origins[:2] == [("captions.tsv", 1), ("captions.tsv", 2)]
    assert data.train.groups is None


def test_generic_zip_of_a_folder_reads_like_the_folder(tmp_path):
    folder = make_generic(tmp_path / "ds")
    archive = zip_folder(folder, tmp_path / "emoji.zip", "emoji")
    plain, zipped = read_captions(folder, val_frac=0).train, read_captions(archive, val_frac=0).train
    assert zipped.root == archive
    assert zipped.files == [f"emoji/{f}" for f in plain.files]
    assert zipped.captions == plain.captions
    with open_member(archive, "emoji/images/c.png") as f:
        assert f.read() == (folder / "images/c.png").read_bytes()
    a = cache_images(plain, tmp_path / "plain", size=8)
    b = cache_images(zipped, tmp_path / "zipped", size=8)
    assert np.array_equal(a.pixels, b.pixels)


def make_flickr8k(root, text_dir=""):
    text = root / text_dir
    for k in range(1, 6):
        save_image(root / "Flicker8k_Dataset" / f"{k}.jpg", 10 + k, 9, seed=k)
    (root / "Flicker8k_Dataset" / "5.jpg").unlink()  # a test image: unused, so it may be absent
    tokens = "".join(f"{k}.jpg#0\tcaption {k} zero\n{k}.jpg#1\tcaption {k} one\n" for k in range(1, 6))
    # As in the real file: a captioned image that is in no list and does not exist.
    write(text / "Flickr8k.token.txt", tokens + "2258277193_586949ec62.jpg.1#0\tghost\n")
    write(text / "Flickr_8k.trainImages.txt", "1.jpg\n2.jpg\n3.jpg\n")
    write(text / "Flickr_8k.devImages.txt", "4.jpg\n")
    write(text / "Flickr_8k.testImages.txt", "5.jpg\n")
    return root


@pytest.mark.parametrize("text_dir", ["", "Flickr8k_text"])  # one folder, or the two official zips unpacked
def test_flickr8k_uses_its_train_and_dev_lists(tmp_path, text_dir):
    data = read_captions(make_flickr8k(tmp_path / "f8k", text_dir))
    prefix = f"{text_dir}/" if text_dir else ""
    assert data.format == "flickr"
    assert data.train.files == [f"Flicker8k_Dataset/{k}.jpg" for k in (1, 2, 3)]
    assert data.val.files == ["Flicker8k_Dataset/4.jpg"]
    assert data.train.captions[0] == ["caption 1 zero", "caption 1 one"]
    assert data.train.origins[0] == (f"{prefix}Flickr8k.token.txt", 1)
    assert "Flickr_8k.trainImages.txt for training" in data.split_rule


def test_flickr30k_token_file_gets_a_seeded_split(tmp_path):
    root = tmp_path / "f30k"
    for k in range(4):
        save_image(root / "flickr30k_images" / f"{100 + k}.jpg", 12, 10, seed=k)
    write(root / "results_20130124.token",
          "".join(f"{100 + k}.jpg#{j}\tperson {k} number {j}\n" for k in range(4) for j in range(3)))
    data = read_captions(root, val_frac=0.25)
    assert data.format == "flickr" and len(data.train) == 3 and len(data.val) == 1
    assert all(len(refs) == 3 for refs in data.train.captions + data.val.captions)
    assert "seeded" in data.split_rule


def test_flickr30k_results_csv_reports_a_line_without_delimiters(tmp_path):
    root = tmp_path / "kaggle30k"
    for k in range(2):
        save_image(root / "flickr30k_images" / f"{k}.jpg", 8, 8, seed=k)
    write(root / "results.csv", "image_name| comment_number| comment\n"
                                "0.jpg| 0| A dog runs .\n"
                                "1.jpg| 0| Two cats | sleep .\n"
                                "1.jpg| 1 A cat sleeps .\n")  # the real file has a line just like this one
    with pytest.raises(CharRNNError, match=r"results\.csv line 4: expected image_name\| comment_number\| comment"):
        read_captions(root)
    data = read_captions(root, val_frac=0, skip_bad=True)
    assert data.train.captions == [["A dog runs ."], ["Two cats | sleep ."]]
    assert [(b.file, b.line) for b in data.skipped] == [("results.csv", 4)]


def test_flickr8k_from_kaggle_unquotes_captions(tmp_path):
    root = tmp_path / "kaggle8k"
    save_image(root / "Images" / "x.jpg")
    write(root / "captions.txt", 'image,caption\nx.jpg,A dog .\nx.jpg,"A dog, wet ."\n')
    assert read_captions(root, val_frac=0).train.captions == [["A dog .", "A dog, wet ."]]


def make_coco(root, year="2017"):
    def annotations(side, images, notes):
        doc = {"images": [{"id": i, "file_name": name} for i, name in images],
               "annotations": [{"id": k, "image_id": i, "caption": c} for k, (i, c) in enumerate(notes)]}
        write(root / "annotations" / f"captions_{side}{year}.json", json.dumps(doc))
        for k, (_, name) in enumerate(images):
            save_image(root / f"{side}{year}" / name, 16, 12, seed=k)

    annotations("train", [(1, "001.jpg"), (2, "002.jpg"), (3, "003.jpg")],
                [(2, "two"), (1, "one"), (1, "one again"), (3, "three")])
    annotations("val", [(9, "009.jpg")], [(9, "nine")])
    return root


@pytest.mark.parametrize("year", ["2017", "2014"])
def test_coco_uses_its_train_and_val_files(tmp_path, year):
    data = read_captions(make_coco(tmp_path / "coco", year))
    assert data.format == "coco"
    assert data.train.files == [f"train{year}/002.jpg", f"train{year}/001.jpg", f"train{year}/003.jpg"]
    assert data.train.captions[1] == ["one", "one again"]
    assert data.val.files == [f"val{year}/009.jpg"] and data.val.captions == [["nine"]]
    assert data.train.origins[0] == (f"annotations/captions_train{year}.json", None)


def test_coco_annotation_of_an_unknown_image_is_a_bad_row(tmp_path):
    root = make_coco(tmp_path / "coco")
    path = root / "annotations" / "captions_val2017.json"
    doc = json.loads(path.read_text())
    doc["annotations"].append({"image_id": 77, "caption": "lost"})
    path.write_text(json.dumps(doc))
    with pytest.raises(CharRNNError, match=r"captions_val2017\.json: annotations\[1\] names image id 77"):
        read_captions(root)


# ----- splits ---------------------------------------------------------------------------------------------

def test_seeded_split_is_by_image_and_reproducible(tmp_path):
    root = make_many(tmp_path / "many")
    a = read_captions(root, val_frac=0.25, seed=3)
    assert len(a.val) == 5 and len(a.train) == 15
    assert not set(a.train.files) & set(a.val.files)  # both references of an image stay on one side
    assert all(len(refs) == 2 for refs in a.train.captions + a.val.captions)
    assert read_captions(root, val_frac=0.25, seed=3).val.files == a.val.files
    assert read_captions(root, val_frac=0.25, seed=4).val.files != a.val.files


def test_named_splits_from_splits_tsv(tmp_path):
    root = make_many(tmp_path / "many", n=4)
    write(root / "splits.tsv", "filename\trandom\tgrouped\n"
                               "00.png\ttrain\ttrain\n01.png\tval\ttrain\n02.png\ttrain\tval\n03.png\ttest\tval\n")
    first = read_captions(root)  # the first column is the default
    assert first.train.files == ["00.png", "02.png"] and first.val.files == ["01.png"]  # test rows unused
    grouped = read_captions(root, split="grouped")
    assert grouped.train.files == ["00.png", "01.png"] and grouped.val.files == ["02.png", "03.png"]
    assert "column 'grouped'" in grouped.split_rule
    with pytest.raises(CharRNNError, match="choose one of random, grouped"):
        read_captions(root, split="nope")


def test_an_image_missing_from_splits_tsv_is_a_bad_row(tmp_path):
    root = make_many(tmp_path / "many", n=3)
    write(root / "splits.tsv", "filename\trandom\n00.png\ttrain\n01.png\tval\n")
    with pytest.raises(CharRNNError, match=r"captions\.tsv line 5: 02\.png has no row in splits\.tsv"):
        read_captions(root)


def test_grouped_split_never_divides_a_group(tmp_path):
    root = make_many(tmp_path / "many", n=12)
    write(root / "groups.tsv", "filename\tgroup\n" + "".join(f"{k:02d}.png\tg{k % 4}\n" for k in range(12)))
    data = read_captions(root, split="grouped", val_frac=0.25, seed=1)
    assert data.train.groups is not None
    assert not set(data.train.groups) & set(data.val.groups)
    assert len(data.val) == 3  # one group of three images
    assert read_captions(root, split="grouped", val_frac=0.25, seed=1).val.files == data.val.files


def test_val_dir_is_used_whole(tmp_path):
    train_root, val_root = make_many(tmp_path / "train", n=4), make_generic(tmp_path / "val")
    data = read_captions(train_root, val_dir=val_root)
    assert len(data.train) == 4 and data.val.files == list(GENERIC) and data.val.root == val_root
    assert "--val-dir" in data.split_rule
    with pytest.raises(CharRNNError, match="pass only one"):
        read_captions(train_root, val_dir=val_root, split="random")


# ----- bad rows -----------------------------------------------------------------------------------------

BAD_LINES = {
    "missing file": (b"ghost.png\tboo\n", r"captions\.tsv line 7: ghost\.png does not exist"),
    "empty caption": (b"a.png\t   \n", r"captions\.tsv line 7: empty caption for a\.png"),
    "no tab": (b"a.png a caption\n", r"captions\.tsv line 7: no TAB"),
    "not utf-8": ("e.png\tcafé\n".encode("latin-1"), r"captions\.tsv line 7: byte 0xe9 .* not UTF-8.*cp1252"),
    "outside": (b"../x.png\tescape\n", r"captions\.tsv line 7: '\.\./x\.png' is not a relative path"),
}


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_each_bad_row_names_its_file_and_line(tmp_path, kind):
    line, message = BAD_LINES[kind]
    root = make_generic(tmp_path / "ds", CAPTIONS_TSV.encode() + line)
    with pytest.raises(CharRNNError, match=message) as e:
        read_captions(root)
    assert "\n" not in str(e.value) and "--skip-bad" in str(e.value)
    data = read_captions(root, val_frac=0, skip_bad=True)
    assert len(data.skipped) == 1 and data.skipped[0].line == 7
    assert data.train.files == list(GENERIC)


def test_many_bad_rows_give_a_count_in_one_line(tmp_path):
    root = make_generic(tmp_path / "ds", CAPTIONS_TSV + "x.png\tx\nno tab here\ny.png\ty\n")
    with pytest.raises(CharRNNError, match=r"^3 bad rows: captions\.tsv line 7: x\.png does not exist; "
                                           r"captions\.tsv line 8: no TAB.* \(and 1 more\); fix them"):
        read_captions(root)


def test_utf16_caption_file_is_refused_at_once(tmp_path):
    root = make_generic(tmp_path / "ds", CAPTIONS_TSV.encode("utf-16"))
    with pytest.raises(CharRNNError, match="UTF-16 text, not UTF-8"):
        read_captions(root)


def test_not_a_dataset(tmp_path):
    with pytest.raises(CharRNNError, match="no captions found"):
        read_captions(tmp_path)
    with pytest.raises(CharRNNError, match="no such file"):
        read_captions(tmp_path / "nope")


# ----- decoding and the cache ---------------------------------------------------------------------------

def reference(path, size):
    """What the cache must hold, computed with plain Pillow."""
    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB").resize((size, size), LANCZOS))


def test_cached_pixels_equal_a_direct_pillow_decode(tmp_path):
    root = make_generic(tmp_path / "ds")
    split = read_captions(root, val_frac=0).train
    images = cache_images(split, tmp_path / "cache" / "train-images", size=16)
    assert images.pixels.shape == (5, 16, 16, 3) and images.pixels.dtype == np.uint8
    assert isinstance(images.pixels, np.memmap)
    assert sorted(os.listdir(tmp_path / "cache")) == ["train-images.json", "train-images.u8"]
    for k, name in enumerate(split.files):
        assert np.array_equal(images.pixels[k], reference(root / name, 16)), name


def test_exif_orientation_and_transparency(tmp_path):
    root = tmp_path / "ds"
    save_image(root / "turned.jpg", 16, 8, seed=1, exif=_exif_orientation(6), quality=95)
    write(root / "clear.png", b"")
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(root / "clear.png")  # transparent black
    write(root / "captions.tsv", "turned.jpg\tturned\nclear.png\tclear\n")
    images = cache_images(read_captions(root, val_frac=0).train, tmp_path / "c", size=8)
    with Image.open(root / "turned.jpg") as im:
        upright = np.asarray(ImageOps.exif_transpose(im).resize((8, 8), LANCZOS))
        as_stored = np.asarray(im.convert("RGB").resize((8, 8), LANCZOS))
    assert np.array_equal(images.pixels[0], upright) and not np.array_equal(images.pixels[0], as_stored)
    assert (images.pixels[1] == 255).all()  # over white, not the black stored under the transparency


def _exif_orientation(value):
    exif = Image.Exif()
    exif[0x0112] = value  # Orientation
    return exif


def test_large_jpeg_decoded_at_reduced_scale_is_close_to_full_decode(tmp_path):
    root = tmp_path / "ds"
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (12, 16, 3)), np.ones((16, 16, 1))).astype(np.uint8)  # 192x256
    write(root / "captions.tsv", "big.jpg\tbig\n")
    Image.fromarray(smooth).save(root / "big.jpg", quality=95)
    images = cache_images(read_captions(root, val_frac=0).train, tmp_path / "c", size=16)
    diff = np.abs(images.pixels[0].astype(int) - reference(root / "big.jpg", 16).astype(int))
    assert diff.mean() < 3


BAD_IMAGES = {
    "truncated jpeg": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "not an image": lambda p: p.write_bytes(b"this is text, not a JPEG"),
}


@pytest.mark.parametrize("kind", list(BAD_IMAGES))
def test_bad_image_names_its_caption_line_and_leaves_nothing(tmp_path, kind):
    root = make_generic(tmp_path / "ds")
    BAD_IMAGES[kind](root / "images/b.jpg")
    split = read_captions(root, val_frac=0).train
    cache = tmp_path / "cache"
    expected = "truncated" if kind == "truncated jpeg" else "not an image"
    with pytest.raises(CharRNNError, match=rf"^captions\.tsv line 2: images/b\.jpg is {expected}.*--skip-bad$"):
        cache_images(split, cache / "imgs", size=8)
    assert list(cache.iterdir()) == []
    images = cache_images(split, cache / "imgs", size=8, skip_bad=True)
    assert images.kept == [0, 2, 3, 4] and images.pixels.shape[0] == 4
    assert images.split.files == [f for f in GENERIC if f != "images/b.jpg"]
    assert images.captions[0] == ["a red square", "another reference"]
    assert [(b.file, b.line) for b in images.skipped] == [("captions.tsv", 2)]
    with pytest.raises(CharRNNError, match="line 2"):  # the cache made with skip_bad obeys the rule too
        cache_images(split, cache / "imgs", size=8)


def test_cache_is_reused_without_decoding_and_rebuilt_when_an_image_changes(tmp_path, monkeypatch):
    root = make_generic(tmp_path / "ds")
    split = read_captions(root, val_frac=0).train
    first = cache_images(split, tmp_path / "imgs.u8", size=8)
    assert not first.reused
    saved = np.array(first.pixels)

    real_open = Image.open

    def refuse(*args, **kw):
        raise AssertionError("decoded again")

    monkeypatch.setattr(Image, "open", refuse)
    again = cache_images(split, tmp_path / "imgs.u8", size=8)
    assert again.reused and np.array_equal(again.pixels, saved)

    monkeypatch.setattr(Image, "open", real_open)
    changed = root / "images/c.png"
    save_image(changed, 16, 12, seed=99)
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    rebuilt = cache_images(split, tmp_path / "imgs.u8", size=8)
    assert not rebuilt.reused
    assert np.array_equal(rebuilt.pixels[2], reference(changed, 8))
    assert np.array_equal(np.delete(np.asarray(rebuilt.pixels), 2, 0), np.delete(saved, 2, 0))
    assert not cache_images(split, tmp_path / "imgs.u8", size=4).reused  # another size is another cache


def _peak_bytes(split, cache):
    tracemalloc.start()
    try:
        cache_images(split, cache, size=64)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_number_of_images(tmp_path):
    small = read_captions(make_many(tmp_path / "small", n=10), val_frac=0).train
    large = read_captions(make_many(tmp_path / "large", n=40), val_frac=0).train
    cache_images(small, tmp_path / "warm-up", size=64)  # first-use allocations (Pillow plugins) out of the way
    growth = _peak_bytes(large, tmp_path / "large-imgs") - _peak_bytes(small, tmp_path / "small-imgs")
    assert growth < 30 * 64 * 64 * 3 / 4  # holding the 30 extra rows would cost four times this
