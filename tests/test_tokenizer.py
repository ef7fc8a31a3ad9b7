"""The joint BPE tokenizer: fixed special ids, lossless round trip, unknowns, save/load."""

from __future__ import annotations

import json

import pytest

from transformer.data.parallel import find_multi30k_dir, load_multi30k
from transformer.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer
from transformer.errors import UserError

SMALL_CORPUS = [
    "A dog runs across the grass.",
    "Ein Hund rennt über das Gras.",
    "Two men are playing football in the park.",
    "Zwei Männer spielen Fußball im Park.",
    "A little girl climbs into a wooden playhouse.",
    "Ein kleines Mädchen klettert in ein Spielhaus aus Holz.",
] * 20


@pytest.fixture(scope="module")
def small():
    return Tokenizer.train(SMALL_CORPUS, vocab_size=300, min_frequency=2)


@pytest.fixture(scope="module")
def multi30k():
    """(tokenizer trained on train.en + train.de with 8000 merges, val pairs); about 2 s."""
    try:
        folder = find_multi30k_dir()
    except UserError as e:
        pytest.skip(f"Multi30k data folder absent: {e}")
    train = load_multi30k("train", "en", "de", folder)
    tokenizer = Tokenizer.train((s for pair in train for s in pair), vocab_size=8000)
    return tokenizer, load_multi30k("val", "en", "de", folder)


def test_special_token_ids_are_fixed(small):
    assert (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    assert (small.pad_id, small.bos_id, small.eos_id, small.unk_id) == (0, 1, 2, 3)
    for token, expected in [("<pad>", 0), ("<bos>", 1), ("<eos>", 2), ("<unk>", 3)]:
        assert small.inner.token_to_id(token) == expected


def test_encode_adds_no_specials_and_decode_skips_them(small):
    ids = small.encode("A dog runs.")
    assert ids and not set(ids) & {PAD_ID, BOS_ID, EOS_ID, UNK_ID}
    assert small.decode([BOS_ID] + ids + [EOS_ID, PAD_ID, PAD_ID]) == "A dog runs."
    # Decoding does not stop at <eos>: whatever follows it is decoded too.
    assert small.decode(ids + [EOS_ID] + ids) == "A dog runs. A dog runs."


def test_tokens_are_subword_strings_with_the_space_marker(small):
    tokens = [small.token(i) for i in small.encode("A dog runs.")]
    assert tokens[0].startswith("▁")
    assert "".join(tokens).replace("▁", " ").strip() == "A dog runs."
    assert len(tokens) == len(small.encode("A dog runs."))


def test_unknown_characters_become_unk_and_do_not_crash(small):
    text = "A dog 🐕 runs 猫 across."
    ids = small.encode(text)
    assert ids.count(UNK_ID) == 2
    decoded = small.decode(ids)
    assert "dog" in decoded and "across." in decoded and "🐕" not in decoded
    assert small.encode_batch(["🐕", ""]) == [small.encode("🐕"), []]


UNKNOWN_CASES = {  # (text with symbols the corpus never had, the same text without them, those)
    "emoji": ("Two men 🧒🧒 are playing football ⚽ in the park 🏞️.",
              "Two men are playing football in the park.", ["🧒", "🧒", "⚽", "🏞️"]),
    "CJK": ("猫 A dog runs 跑 across the grass 草.", "A dog runs across the grass.",
            ["猫", "跑", "草"]),
    "symbols": ("A dog → runs across € the grass ©.", "A dog runs across the grass.",
                ["→", "€", "©"]),
    "nothing known": ("🐕 猫 →", "", ["🐕", "猫", "→"]),
}


@pytest.mark.parametrize("text,clean,symbols", UNKNOWN_CASES.values(), ids=UNKNOWN_CASES.keys())
def test_encode_known_leaves_unknown_symbols_out(small, tmp_path, text, clean, symbols):
    ids, dropped = small.encode_known([text, clean])
    assert UNK_ID in small.encode(text)  # without encode_known: <unk>
    assert ids[0] == ids[1] == small.encode(clean)  # the known words' tokens, exactly
    assert dropped == [symbols, []]  # "🏞️" (two code points) is one symbol
    # A tokenizer.json saved by any run loads and does the same: the file format is unchanged.
    small.save(tmp_path / "tokenizer.json")
    assert Tokenizer.load(tmp_path / "tokenizer.json").encode_known([text]) == ([ids[0]], [symbols])


def test_batch_matches_single(small):
    texts = ["A dog runs.", "Zwei Männer spielen.", ""]
    batch = small.encode_batch(texts)
    assert batch == [small.encode(t) for t in texts]


def test_save_load_gives_identical_ids(small, tmp_path):
    path = tmp_path / "run" / "tokenizer.json"
    small.save(path)
    loaded = Tokenizer.load(path)
    texts = SMALL_CORPUS[:6] + ["Unseen words: Xylophon 🐕 quietly."]
    assert loaded.vocab_size == small.vocab_size
    assert loaded.encode_batch(texts) == small.encode_batch(texts)
    assert [loaded.decode(ids) for ids in loaded.encode_batch(texts)] == \
        [small.decode(ids) for ids in small.encode_batch(texts)]


def test_load_missing_file(tmp_path):
    path = tmp_path / "tokenizer.json"
    with pytest.raises(UserError, match="tokenizer.json: no such file$") as info:
        Tokenizer.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", ["", "{not json", '{"model": 5}'])
def test_load_corrupt_file(tmp_path, content):
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    with pytest.raises(UserError, match="not a valid tokenizer file") as info:
        Tokenizer.load(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_load_rejects_moved_special_ids(small, tmp_path):
    path = tmp_path / "tokenizer.json"
    small.save(path)
    data = json.loads(path.read_text())
    vocab = data["model"]["vocab"]
    vocab["<pad>"], vocab["<bos>"] = vocab["<bos>"], vocab["<pad>"]
    for added in data["added_tokens"]:
        added["id"] = {0: 1, 1: 0}.get(added["id"], added["id"])
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match="special token <pad> must have id 0"):
        Tokenizer.load(path)


def test_train_rejects_tiny_vocab_and_empty_text():
    with pytest.raises(UserError, match="^vocab_size: "):
        Tokenizer.train(SMALL_CORPUS, vocab_size=4)
    with pytest.raises(UserError, match="no text to train on"):
        Tokenizer.train(["", ""], vocab_size=100)


def test_multi30k_round_trip_is_lossless_on_validation(multi30k):
    tokenizer, val = multi30k
    assert tokenizer.vocab_size == 8000
    for side in (0, 1):  # en, de
        texts = [pair[side] for pair in val]
        ids = tokenizer.encode_batch(texts)
        assert all(UNK_ID not in row for row in ids)
        assert [tokenizer.decode(row) for row in ids] == texts
    # Subwords, not characters: the joint vocabulary compresses real text.
    n_tokens = sum(len(row) for row in tokenizer.encode_batch([en for en, _ in val]))
    n_words = sum(len(en.split()) for en, _ in val)
    assert n_tokens < 1.5 * n_words


def test_the_reported_sentence_keeps_its_words_with_the_multi30k_vocabulary(multi30k):
    tokenizer, _ = multi30k
    ids, dropped = tokenizer.encode_known(["Two children 🧒🧒 play with a ball ⚽ on the beach 🏖️."])
    assert ids == [tokenizer.encode("Two children play with a ball on the beach.")]
    assert dropped == [["🧒", "🧒", "⚽", "🏖️"]]
