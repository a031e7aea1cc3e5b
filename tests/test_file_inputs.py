"""Declared file inputs (ModelFile, InputFile): listing, one lookup per run, cache keys that know which
file, symbolic links that work, and names that may not leave their folder."""

import os

import numpy as np
import pytest
from PIL import Image

from nodegraph import REGISTRY, Executor, Graph
from nodes.core.env import SDEnvironment

REGISTRY.discover("nodes")


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    from nodes.models.testing import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("store") / "tiny.safetensors")


def loader_graph(ckpt="tiny.safetensors", vae=None, image=None) -> Graph:
    g = Graph(REGISTRY)
    g.add_node("CheckpointLoaderSimple", "1", {"ckpt_name": ckpt})
    if vae is not None:
        g.add_node("VAELoader", "2", {"vae_name": vae})
    if image is not None:
        g.add_node("LoadImage", "3", {"image": image})
    return g


def test_symlinked_checkpoint_vae_and_input_image_load(tmp_path, tiny_file):
    models, inputs = tmp_path / "models", tmp_path / "in"
    (models / "checkpoints").mkdir(parents=True)
    (models / "vae").mkdir()
    inputs.mkdir()
    os.symlink(tiny_file, models / "checkpoints" / "linked.safetensors")
    os.symlink(tiny_file, models / "vae" / "linked-vae.safetensors")
    picture = tmp_path / "elsewhere.png"
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(picture)
    os.symlink(picture, inputs / "linked.png")
    env = SDEnvironment(models_dir=models, input_dir=inputs, device="cpu", dtype="fp32")

    assert env.files.names("checkpoints") == ["linked.safetensors"]
    assert env.files.names("vae") == ["linked-vae.safetensors"]
    assert env.files.names("input") == ["linked.png"]
    g = loader_graph("linked.safetensors", "linked-vae.safetensors", "linked.png")
    result = Executor(REGISTRY, env=env).run(g, outputs=["1", "2", "3"], check=False)
    assert result.ok, result.error or result.problems
    assert result.outputs["3"][0].shape == (1, 16, 16, 3)


def test_a_symlinked_model_folder_is_listed_and_loads(tmp_path, tiny_file):
    shared = tmp_path / "other-tool" / "models"
    shared.mkdir(parents=True)
    os.symlink(tiny_file, shared / "tiny.safetensors")
    (tmp_path / "models" / "checkpoints").mkdir(parents=True)
    os.symlink(shared, tmp_path / "models" / "checkpoints" / "from-other-tool")
    env = SDEnvironment(models_dir=tmp_path / "models", device="cpu", dtype="fp32")
    assert env.files.names("checkpoints") == ["from-other-tool/tiny.safetensors"]
    result = Executor(REGISTRY, env=env).run(loader_graph("from-other-tool/tiny.safetensors"), outputs=["1"], check=False)
    assert result.ok, result.error or result.problems


def test_a_link_loop_inside_a_folder_does_not_hang_listing(tmp_path, tiny_file):
    folder = tmp_path / "models" / "checkpoints"
    folder.mkdir(parents=True)
    os.symlink(tiny_file, folder / "tiny.safetensors")
    os.symlink(folder, folder / "loop")
    assert SDEnvironment(models_dir=tmp_path / "models").files.names("checkpoints") == ["tiny.safetensors"]


@pytest.mark.parametrize("name", ["../x.safetensors", "/abs/x.safetensors"])
def test_names_leaving_the_folder_are_refused_with_a_clear_error_when_run(tmp_path, name):
    env = SDEnvironment(models_dir=tmp_path / "models")
    (tmp_path / "x.safetensors").write_bytes(b"")
    result = Executor(REGISTRY, env=env).run(loader_graph(name), outputs=["1"], check=False)
    assert result.status == "error"
    assert result.error.message.startswith(f'node 1 (CheckpointLoaderSimple): input "ckpt_name": "{name}" ')
    assert "absolute path" in result.error.message or '".." part' in result.error.message
    assert "Traceback" not in result.error.message


def test_the_same_name_in_two_model_folders_gets_two_cache_keys(tmp_path, tiny_file):
    from nodes.models.testing import write_tiny_checkpoint

    envs = []
    for seed, folder in enumerate(("a", "b")):
        write_tiny_checkpoint(tmp_path / folder / "checkpoints" / "model.safetensors", seed=seed)
        envs.append(SDEnvironment(models_dir=tmp_path / folder))
    g = loader_graph("model.safetensors")
    keys = [Executor(REGISTRY, env=env).plan(g, ["1"]).signatures["1"] for env in envs]
    assert keys[0] != keys[1]


def test_replacing_a_file_changes_its_cache_key(tmp_path, tiny_file):
    folder = tmp_path / "models" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "m.safetensors").write_bytes(b"one")
    executor = Executor(REGISTRY, env=SDEnvironment(models_dir=tmp_path / "models"))
    before = executor.plan(loader_graph("m.safetensors"), ["1"]).signatures["1"]
    (folder / "m.safetensors").write_bytes(b"second version")
    assert executor.plan(loader_graph("m.safetensors"), ["1"]).signatures["1"] != before


def test_a_file_is_resolved_once_per_run(tmp_path, tiny_file, monkeypatch):
    folder = tmp_path / "models" / "checkpoints"
    folder.mkdir(parents=True)
    os.symlink(tiny_file, folder / "tiny.safetensors")
    env = SDEnvironment(models_dir=tmp_path / "models", device="cpu", dtype="fp32")
    lookups = []
    real_find = type(env.files).find

    def counting_find(self, kind, name):
        lookups.append((kind, name))
        return real_find(self, kind, name)

    monkeypatch.setattr(type(env.files), "find", counting_find)
    result = Executor(REGISTRY, env=env).run(loader_graph(), outputs=["1"], check=False)
    assert result.ok, result.error
    assert lookups == [("checkpoints", "tiny.safetensors")]


def test_folders_holding_a_diffusers_model_are_one_entry(tmp_path):
    model = tmp_path / "models" / "checkpoints" / "sd-folder"
    (model / "unet").mkdir(parents=True)
    (model / "model_index.json").write_text("{}")
    (model / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    (tmp_path / "models" / "checkpoints" / "plain.ckpt").write_bytes(b"")
    (tmp_path / "models" / "checkpoints" / "notes.txt").write_text("not a model")
    env = SDEnvironment(models_dir=tmp_path / "models")
    assert env.files.names("checkpoints") == ["plain.ckpt", "sd-folder"]
