"""Workflows inside images: ComfyUI's PNG chunks and WebP EXIF, sdgraph's chunk, A1111's
parameters (PNG chunk, JPEG UserComment, after IDAT, hidden in the alpha channel), Fooocus's JSON —
and broken images, which give one clear WorkflowError, never a crash or a hang. The images here are
made with Pillow, so the reader is checked against another implementation of the formats."""

import io
import json
import struct
import time
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from nodegraph import REGISTRY, WorkflowError
from nodegraph.comfy_ui_writer import to_comfy_ui
from nodegraph.images import read_image_text
from nodegraph.workflow import from_comfy_ui, read_bytes, read_workflow, to_comfy_api, to_native
from tests.shared import FIXTURES
from tests.test_comfy_ui import txt2img

REGISTRY.discover("nodes")
A1111 = FIXTURES / "comfy_workflows" / "a1111"
UI = txt2img()
API = to_comfy_api(from_comfy_ui(txt2img(), REGISTRY, strict=False))


def png(chunks: dict[str, str], *, compress: str = "", size=(4, 4), mode="RGB") -> bytes:
    info = PngInfo()
    for key, text in chunks.items():
        if compress == "itxt":
            info.add_itxt(key, text, zip=True)
        else:
            info.add_text(key, text, zip=compress == "ztxt")
    out = io.BytesIO()
    Image.new(mode, size, "white").save(out, "PNG", pnginfo=info)
    return out.getvalue()


def webp_with_exif(strings: dict[int, str]) -> bytes:
    image = Image.new("RGB", (8, 8))
    exif = image.getexif()
    for tag, text in strings.items():
        exif[tag] = text
    out = io.BytesIO()
    image.save(out, "WEBP", exif=exif)
    return out.getvalue()


def jpeg_with_user_comment(text: str) -> bytes:
    image = Image.new("RGB", (8, 8))
    exif = image.getexif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + text.encode("utf-16-be")
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes())
    return out.getvalue()


def read(tmp_path, data: bytes, name="image.png"):
    path = tmp_path / name
    path.write_bytes(data)
    return read_workflow(path, REGISTRY, strict=False, checkpoints=lambda: ["realistic_realisticVisionV20_v20.safetensors"])


def test_comfyui_png_gives_its_ui_workflow_before_its_prompt(tmp_path):
    graph, kind = read(tmp_path, png({"prompt": json.dumps(API), "workflow": json.dumps(UI)}))
    assert kind == "comfy_ui:png"
    assert graph.nodes["3"].ui["pos"] == [300, 50]  # the UI workflow's layout, not an automatic one
    assert to_comfy_api(graph) == API


def test_png_with_only_a_ui_workflow_chunk_is_read(tmp_path):
    graph, kind = read(tmp_path, png({"workflow": json.dumps(UI)}, compress="itxt"))
    assert kind == "comfy_ui:png" and set(graph.nodes) == {"3", "4", "5", "6", "7", "8", "9"}


def test_prompt_only_png_is_read_and_laid_out(tmp_path):
    graph, kind = read(tmp_path, png({"prompt": json.dumps(API)}, compress="ztxt"))
    assert kind == "comfy_api:png" and to_comfy_api(graph) == API
    assert len({tuple(n.ui["pos"]) for n in graph.nodes.values()}) == len(graph.nodes)


def test_a_broken_workflow_chunk_falls_back_to_the_prompt_with_a_warning(tmp_path):
    graph, kind = read(tmp_path, png({"workflow": "{ broken", "prompt": json.dumps(API)}))
    assert kind == "comfy_api:png"
    assert graph.warnings[0].startswith("used the ComfyUI prompt and not the broken 'workflow' text")


def test_comfyui_webp_carries_its_workflow_in_exif_strings(tmp_path):
    data = webp_with_exif({0x0110: "prompt:" + json.dumps(API), 0x010F: "workflow:" + json.dumps(UI)})
    graph, kind = read(tmp_path, data, "image.webp")
    assert kind == "comfy_ui:webp" and to_comfy_api(graph) == API


def test_a1111_jpeg_user_comment_becomes_a_txt2img_workflow(tmp_path):
    text = (A1111 / "sdparsers__AUTOMATIC1111_automatic1111_cropped.parameters.txt").read_text()
    for data in (jpeg_with_user_comment(text), (A1111 / "sdparsers__AUTOMATIC1111_automatic1111_cropped.jpg").read_bytes()):
        graph, kind = read(tmp_path, data, "image.jpg")
        assert kind == "a1111:jpeg"
        assert_duck(graph)


def assert_duck(graph):
    """The sd-parsers sample: photo of a duck / monochrome, UniPC, 15 steps, CFG 5, 512x400."""
    by_type = {n.type: n for n in graph.nodes.values()}
    prompts = sorted(n.values["text"] for n in graph.nodes.values() if n.type == "CLIPTextEncode")
    assert prompts == ["monochrome", "photo of a duck"]
    assert by_type["KSampler"].values == {"seed": 235284042, "steps": 15, "cfg": 5.0, "sampler_name": "uni_pc",
                                          "scheduler": "normal", "denoise": 1.0}
    assert by_type["EmptyLatentImage"].values["width"] == 512 and by_type["EmptyLatentImage"].values["height"] == 400
    assert by_type["CheckpointLoaderSimple"].values["ckpt_name"] == "realistic_realisticVisionV20_v20.safetensors"
    assert "Model hash: c0d1994c73" in graph.ui["notes"][0]["text"]


@pytest.mark.parametrize("name", ["sdparsers__AUTOMATIC1111_automatic1111_cropped.png",
                                  "sdparsers__tests_resources_bad_images_text_after_idat.png"])
def test_a1111_pngs_open_to_their_parameters_even_after_idat(tmp_path, name):
    graph, kind = read(tmp_path, (A1111 / name).read_bytes())
    assert kind == "a1111:png"
    assert_duck(graph)


def test_a1111_stealth_text_in_the_alpha_channel_is_read(tmp_path):
    expect = next(s for s in json.loads((A1111 / "infotext_samples.json").read_text()) if s["id"] == "sdparsers_stealth")
    graph, kind = read(tmp_path, (A1111 / "sdparsers__AUTOMATIC1111_automatic1111_stealth.png").read_bytes())
    assert kind == "a1111:png"
    by_type = {n.type: n for n in graph.nodes.values()}
    f = expect["expect"]
    assert sorted(n.values["text"] for n in graph.nodes.values() if n.type == "CLIPTextEncode") == \
        sorted([f["prompt"], f["negative"]])
    assert by_type["KSampler"].values["seed"] == int(f["Seed"]) and by_type["KSampler"].values["steps"] == 20
    assert by_type["CLIPSetLastLayer"].values["stop_at_clip_layer"] == -int(f["Clip skip"])
    assert f"Version: {f['Version']}" in graph.ui["notes"][0]["text"]


def test_fooocus_json_parameters_are_not_read_as_a1111_text(tmp_path):
    graph, kind = read(tmp_path, (A1111 / "sdparsers__Fooocus_fooocus1_cropped.png").read_bytes())
    assert kind == "fooocus:png"
    by_type = {n.type: n for n in graph.nodes.values()}
    assert by_type["KSampler"].values == {"seed": 6952411511246973023, "steps": 30, "cfg": 4.0,
                                          "sampler_name": "dpmpp_2m_sde_gpu", "scheduler": "karras", "denoise": 1.0}
    assert (by_type["EmptyLatentImage"].values["width"], by_type["EmptyLatentImage"].values["height"]) == (768, 1280)
    assert "a smiling goldfish" in [n.values["text"] for n in graph.nodes.values() if n.type == "CLIPTextEncode"]
    assert "styles:" in graph.ui["notes"][0]["text"]


def test_sdgraph_png_is_read_before_comfyuis_chunks(tmp_path):
    graph = from_comfy_ui(txt2img(), REGISTRY, strict=False)
    graph.nodes["3"].ui["title"] = "ours"
    data = png({"sdgraph": json.dumps(to_native(graph)), "workflow": json.dumps(to_comfy_ui(graph)),
                "prompt": json.dumps(API)})
    again, kind = read(tmp_path, data)
    assert kind == "native:png" and again.nodes["3"].ui["title"] == "ours"


def test_an_image_without_a_workflow_says_what_it_holds(tmp_path):
    with pytest.raises(WorkflowError, match=r"this PNG holds no workflow \(text found: Software\)"):
        read(tmp_path, png({"Software": "GIMP"}))


def test_a_huge_compressed_chunk_is_refused_quickly_with_a_clear_error(tmp_path):
    bomb = zlib.compress(b" " * (65 * 2**20), 9)
    body = b"workflow\0" + b"\1\0" + b"\0\0" + bomb  # iTXt: compressed, no language or translation
    data = png({})
    data = data[:33] + struct.pack(">I", len(body)) + b"iTXt" + body + b"\0\0\0\0" + data[33:]
    started = time.perf_counter()
    with pytest.raises(WorkflowError, match="'workflow' text in the image unpacks to more than 64 MiB"):
        read(tmp_path, data)
    assert time.perf_counter() - started < 5


def test_a_cut_short_png_is_reported_as_damaged(tmp_path):
    data = png({"workflow": json.dumps(UI)})
    with pytest.raises(WorkflowError, match="the PNG is damaged: its 'IHDR' chunk runs past the end"):
        read(tmp_path, data[:20])


# -- fuzzing -----------------------------------------------------------------------------------
BASES = [
    png({"workflow": json.dumps(UI), "prompt": json.dumps(API)}),
    png({"workflow": json.dumps(UI)}, compress="itxt"),
    png({"parameters": "a cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1"},
        compress="ztxt"),
    (A1111 / "sdparsers__AUTOMATIC1111_automatic1111_stealth.png").read_bytes(),
    webp_with_exif({0x0110: "prompt:" + json.dumps(API), 0x010F: "workflow:" + json.dumps(UI)}),
    jpeg_with_user_comment("a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512"),
]
PER_EXAMPLE = 4  # images per example: 130 examples feed 520 broken images
damage = st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 3), st.integers(0, 255)), min_size=1, max_size=4)


def broken(data: bytes, edits) -> bytes:
    """Flip, cut, insert or overwrite with a huge length: every way a file breaks."""
    data = bytearray(data)
    for where, how, byte in edits:
        at = where % max(len(data), 1)
        if how == 0:
            data[at] = byte
        elif how == 1:
            del data[at:]
        elif how == 2:
            data[at:at] = bytes([byte]) * (1 + byte % 7)
        else:
            data[at:at + 4] = b"\xff\xff\xff" + bytes([byte])
        if not data:
            break
    return bytes(data)


@settings(max_examples=130, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(BASES) - 1), damage), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
def test_only_workflow_errors_escape_the_image_readers_in_bounded_time(images):
    for base, edits in images:
        data = broken(BASES[base], edits)
        started = time.perf_counter()
        try:
            read_image_text(data)
            graph, _kind = read_bytes(data, REGISTRY, False, None)
        except WorkflowError as e:
            assert e.problems and all(isinstance(p, str) and p for p in e.problems)
        else:
            assert graph is not None
        assert time.perf_counter() - started < 3
