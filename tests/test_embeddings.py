"""Textual-inversion embeddings: `embedding:name` words become their vectors in place of token
embeddings, with the weight of the text around them, for each text tower of the model."""

import copy

import pytest
import torch
from safetensors.torch import save_file

from nodegraph import REGISTRY, Executor, Graph, UserError
from nodes.core.env import SDEnvironment
from nodes.models import load_checkpoint
from nodes.models.configs import clip_tokenizer
from nodes.text import encode_text, tokenize
from nodes.text.embeddings import Embedding, file_name_for, load_embedding, split_words

REGISTRY.discover("nodes")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from nodes.models.testing import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("ti")
    write_tiny_checkpoint(root / "models" / "checkpoints" / "tiny.safetensors")
    (root / "models" / "embeddings").mkdir()
    vectors = torch.randn(2, 32, generator=torch.Generator().manual_seed(4))
    save_file({"emb_params": vectors}, str(root / "models" / "embeddings" / "tiny_ti.safetensors"))
    return root, vectors


def one_token_id(word: str) -> int:
    ids = clip_tokenizer()(word, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1
    return ids[0]


def test_embedding_vectors_stand_where_word_embeddings_would(models):
    root, vectors = models
    _, clip, _ = load_checkpoint(root / "models" / "checkpoints" / "tiny.safetensors")
    lookup = {"tiny_ti": load_embedding(root / "models" / "embeddings" / "tiny_ti.safetensors")}.get
    tokens = tokenize(clip.tokenizer, "a (embedding:tiny_ti:1.2) circle", pad_id=clip.pad_id, embeddings=lookup)
    assert tokens.words[0][:5] == ["<start>", "a", "<tiny_ti:0>", "<tiny_ti:1>", "circle"]
    assert tokens.weights[0][2:4] == [1.2, 1.2]
    ours = encode_text(clip, "a (embedding:tiny_ti:1.2) circle", lookup)[0].cond

    # The same thing by hand: two words whose embedding rows are set to the vectors.
    cat, dog = one_token_id("cat"), one_token_id("dog")
    by_hand = copy.deepcopy(clip)
    layer = by_hand.text_encoder.embeddings.token_embedding
    with torch.no_grad():
        layer.weight[cat] = vectors[0]
        layer.weight[dog] = vectors[1]
    assert torch.equal(ours, encode_text(by_hand, "a (cat dog:1.2) circle")[0].cond)
    assert not torch.equal(ours, encode_text(clip, "a circle")[0].cond)


def test_a_missing_embedding_is_left_out_with_a_warning_and_the_run_goes_on(models, caplog):
    root, _ = models
    g = Graph(REGISTRY)
    g.add_node("CheckpointLoaderSimple", "1", {"ckpt_name": "tiny.safetensors"})
    g.add_node("CLIPTokenize", "2", {"text": "embedding:EasyNegative, blurry"})
    g.add_node("CLIPTextEncodeTokens", "3")
    g.connect("1", 1, "2", "clip")
    g.connect("1", 1, "3", "clip")
    g.connect("2", 0, "3", "tokens")
    result = Executor(REGISTRY, env=SDEnvironment(models_dir=root / "models")).run(g, outputs=["3"], check=False)
    assert result.ok, result.error
    assert result.outputs["2"][0].words[0][:3] == ["<start>", "blurry", "<end>"]
    assert 'embedding "EasyNegative," is not in models/embeddings' in caplog.text


def test_names_are_found_with_or_without_their_extension():
    available = ["tiny_ti.safetensors", "old.pt", "sub/deep.bin"]
    assert file_name_for("tiny_ti", available) == "tiny_ti.safetensors"
    assert file_name_for("tiny_ti,", available) == "tiny_ti.safetensors"  # a comma typed after the name
    assert file_name_for("old.pt", available) == "old.pt"
    assert file_name_for("sub/deep", available) == "sub/deep.bin"
    assert file_name_for("missing", available) is None
    assert split_words("a embedding:x, b") == [("text", "a "), ("embedding", "x,"), ("text", " b")]
    assert split_words("no_embedding:here") == [("text", "no_embedding:here")]


def test_sdxl_embeddings_feed_each_tower_its_own_width_and_refuse_other_families(tmp_path):
    import torch as t

    save_file({"clip_l": t.ones(3, 768), "clip_g": t.zeros(3, 1280)}, str(tmp_path / "xl.safetensors"))
    embedding = load_embedding(tmp_path / "xl.safetensors")
    assert embedding.length == 3 and embedding.for_width(1280).shape == (3, 1280)
    with pytest.raises(UserError, match="768, 1280-wide vectors, but this text encoder takes 1024"):
        embedding.for_width(1024)
    t.save({"string_to_param": {"*": t.ones(4, 768)}, "name": "a1111"}, tmp_path / "a1111.pt")
    assert load_embedding(tmp_path / "a1111.pt").for_width(768).shape == (4, 768)
    assert isinstance(embedding, Embedding)
