"""Image and folder nodes without a model: LoadImage, SaveImage naming, ImageScale, model folders."""

import numpy as np
import pytest
import torch
from PIL import Image

from nodegraph import REGISTRY, UserError
from nodegraph.fileio import read_png_text
from nodes.core.env import SDEnvironment
from nodes.imaging.files import load_image, resolve_prefix, save_images
from nodes.imaging.ops import resize_bchw

REGISTRY.discover("nodes")


def test_load_image_turns_alpha_into_a_mask_that_is_one_where_transparent(tmp_path):
    rgba = np.zeros((4, 6, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:, :3, 3] = 255  # left half opaque
    Image.fromarray(rgba, "RGBA").save(tmp_path / "half.png")
    image, mask = load_image(tmp_path / "half.png")
    assert image.shape == (1, 4, 6, 3) and mask.shape == (1, 4, 6)
    assert torch.equal(image[0, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert mask[0, :, :3].sum() == 0 and torch.all(mask[0, :, 3:] == 1)
    Image.fromarray(rgba[..., :3]).save(tmp_path / "rgb.jpg")
    _, mask = load_image(tmp_path / "rgb.jpg")
    assert mask.abs().sum() == 0


def test_load_image_refuses_a_non_image_clearly(tmp_path):
    (tmp_path / "notes.png").write_text("hello")
    with pytest.raises(ValueError, match="notes.png is not an image Pillow can read"):
        load_image(tmp_path / "notes.png")


def test_save_images_counts_up_truncates_to_uint8_and_embeds_chunks(tmp_path):
    images = torch.full((2, 2, 2, 3), 0.999)  # 254.745 → 254 (truncated, as ComfyUI does)
    paths = save_images(images, tmp_path, "run/cat", {"sdgraph": "{}", "prompt": "{}"})
    assert [p.name for p in paths] == ["cat_00001_.png", "cat_00002_.png"]
    assert paths[0].parent == tmp_path / "run"
    assert np.asarray(Image.open(paths[0]))[0, 0].tolist() == [254, 254, 254]
    assert read_png_text(paths[1].read_bytes()) == {"sdgraph": "{}", "prompt": "{}"}
    more = save_images(images[:1], tmp_path, "run/cat", {})
    assert more[0].name == "cat_00003_.png"


@pytest.mark.parametrize("prefix", ["../out", "/etc/passwd", "a/../../b", "."])
def test_a_prefix_can_never_leave_the_output_folder(tmp_path, prefix):
    with pytest.raises(ValueError):
        resolve_prefix(tmp_path / "output", prefix)


def test_resize_keeps_values_and_crops_to_aspect():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(resize_bchw(x, 4, 4, "nearest-exact"), x)
    assert resize_bchw(torch.ones(1, 4, 8, 16), 4, 4, "bislerp", "center").shape == (1, 4, 4, 4)
    assert torch.allclose(resize_bchw(torch.ones(1, 4, 8, 8), 16, 16, "bislerp"), torch.ones(1, 4, 16, 16))


def test_extra_model_paths_yaml_adds_folders_like_comfyui(tmp_path):
    comfy = tmp_path / "ComfyUI"
    (comfy / "models" / "checkpoints").mkdir(parents=True)
    (comfy / "models" / "checkpoints" / "shared.safetensors").write_bytes(b"")
    (tmp_path / "extra.yaml").write_text(
        "comfyui:\n  base_path: ComfyUI/\n  checkpoints: |\n    models/checkpoints\n    elsewhere\n  vae: models/vae\n")
    env = SDEnvironment(models_dir=tmp_path / "mine")
    env.add_extra_model_paths(tmp_path / "extra.yaml")
    assert env.files.folders("checkpoints")[1:] == [comfy / "models" / "checkpoints", comfy / "elsewhere"]
    assert env.files.names("checkpoints") == ["shared.safetensors"]
    assert env.files.find("checkpoints", "shared.safetensors").resolve() == (comfy / "models" / "checkpoints" /
                                                                             "shared.safetensors").resolve()
    with pytest.raises(UserError, match=r'"\.\./\.\./extra\.yaml" has a "\.\." part'):
        env.files.find("checkpoints", "../../extra.yaml")


def test_device_policy_auto_is_fp32_on_cpu_and_refuses_missing_cuda(monkeypatch):
    from nodes.core import device as policy
    from nodes.core.device import resolve

    monkeypatch.setattr(policy, "cpu_has_native_bf16", lambda: False)  # bf16 CPUs: see tests/test_precision.py
    device, dtype = resolve("cpu")
    assert (device.type, dtype) == ("cpu", torch.float32)
    assert resolve("cpu", "bf16")[1] == torch.bfloat16
    env = SDEnvironment(device="cpu", dtype="bf16")
    assert (env.device.type, env.dtype) == ("cpu", torch.bfloat16)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="use --device cpu"):
            resolve("cuda")


def test_every_node_declares_comfyui_names_for_shared_nodes():
    # Input names and output order of nodes ComfyUI also has, so its API workflows run unchanged.
    expected = {
        "KSampler": ["model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
                     "latent_image", "denoise"],
        "VAEDecode": ["samples", "vae"], "VAEEncode": ["pixels", "vae"], "SaveImage": ["images", "filename_prefix"],
        "LoadImage": ["image"], "CLIPSetLastLayer": ["clip", "stop_at_clip_layer"], "CLIPTextEncode": ["text", "clip"],
        "EmptyLatentImage": ["width", "height", "batch_size"], "CheckpointLoaderSimple": ["ckpt_name"],
        "LatentUpscale": ["samples", "upscale_method", "width", "height", "crop"],
        "ImageScale": ["image", "upscale_method", "width", "height", "crop"],
    }
    for name, inputs in expected.items():
        assert [i.name for i in REGISTRY.get(name).inputs] == inputs, name
    assert [o.type.name for o in REGISTRY.get("CheckpointLoaderSimple").outputs] == ["MODEL", "CLIP", "VAE"]
    assert [o.type.name for o in REGISTRY.get("LoadImage").outputs] == ["IMAGE", "MASK"]
