"""Grounding maps (issue #21) equal a plain autograd reference, per family, in float32.

The reference is written here from the definition, with the model's own modules and forwards
(not the caption step's cached decoder or its copies): one caption at a time, no cache, the
whole sequence through the model, ``L`` = the summed log-probabilities of the caption's tokens,
``s_p = |sum_c X[p, c] dL/dX[p, c]|`` over the patch tokens, normalised. The maps under test
come from ``caption.grounding``: many captions of several images and layers (of different
lengths, so padded) in one backward pass through the decoding path captioning uses.
"""

from __future__ import annotations

import pytest
import torch

from latent_verbalizer.components.caption.decoder_factory import make_decoder
from latent_verbalizer.components.caption.grounding import Grounder
from latent_verbalizer.components.common.model_families import BLIP, COCA, LLAVA, load_model
from latent_verbalizer.components.common.model_families.coca_loading import SOT_TOKEN_ID
from tests.images import skimage_photo_paths

FAMILIES = ("tiny-random-coca", "tiny-random-blip", "tiny-random-vit-gpt2", "tiny-random-llava")
N_PHOTOS = 2
TOLERANCE = 1e-4


@pytest.fixture(scope="module", params=FAMILIES)
def loaded(request):
    return load_model(request.param)


@pytest.fixture(scope="module")
def blocks(loaded):
    """Every layer's block outputs of a few photos: ``{layer: [photos, tokens, width]}``."""
    from PIL import Image

    pixels = torch.stack([loaded.preprocess(Image.open(p).convert("RGB")) for p in skimage_photo_paths()[:N_PHOTOS]])
    layers = list(range(loaded.n_layers))
    return dict(zip(layers, loaded.vision_block_outputs(pixels, layers)))


def reference_logits(loaded, x: torch.Tensor, layer_output: torch.Tensor, caption_input: list[int]) -> torch.Tensor:
    """Logits ``[T, vocab]`` after each of ``caption_input`` for one image whose ``X_k`` is ``x``
    ``[1, tokens, width]``: the model's own modules and forwards, no cache."""
    model = loaded.model
    if loaded.family == COCA:
        pool = model.visual.attn_pool
        hook = pool.ln_k.register_forward_hook(lambda module, args, output: x)  # the pooler's own forward, from X on
        try:
            image_embs = model.visual.ln_post(pool(layer_output))[:, 1:]
        finally:
            hook.remove()
        text = torch.tensor([caption_input])
        latent = torch.zeros(1, 1)
        return model(None, text, image_latent=latent, image_embs=image_embs, output_labels=False)["logits"][0]
    ids = torch.tensor([caption_input])
    if loaded.family == BLIP:
        return model.text_decoder(input_ids=ids, encoder_hidden_states=x, use_cache=False).logits[0]
    if loaded.family == LLAVA:
        prompt = loaded.prompt_ids()  # the processor's prompt, image placeholder expanded
        features = model.model.multi_modal_projector(x[:, 1:])  # the "default" strategy drops CLS
        full = torch.tensor([prompt[:-1] + caption_input])
        embeds = model.get_input_embeddings()(full)
        mask = (full == model.config.image_token_id)[..., None].expand_as(embeds)
        embeds = embeds.masked_scatter(mask, features.reshape(-1))
        return model(inputs_embeds=embeds, use_cache=False).logits[0, len(prompt) - 1:]
    # VisionEncoderDecoder: the model's own forward from the encoder's (normalised) output on
    return model(encoder_outputs=(x,), decoder_input_ids=ids, use_cache=False).logits[0]


def normalised_tokens(loaded, layer_output: torch.Tensor) -> torch.Tensor:
    """``X_k`` as the definition names it, from the model's own modules."""
    model = loaded.model
    if loaded.family == COCA:
        return model.visual.attn_pool.ln_k(layer_output)
    if loaded.family == BLIP:
        return model.vision_model.post_layernorm(layer_output)
    if loaded.family == LLAVA:
        return layer_output
    return model.encoder.layernorm(layer_output)


def reference_map(loaded, start_id: int, layer_output: torch.Tensor, token_ids: list[int]) -> torch.Tensor:
    x = normalised_tokens(loaded, layer_output).detach().requires_grad_(True)
    logits = reference_logits(loaded, x, layer_output, [start_id] + token_ids[:-1])
    loss = torch.log_softmax(logits.float(), -1)[torch.arange(len(token_ids)), torch.tensor(token_ids)].sum()
    (grad,) = torch.autograd.grad(loss, x)
    rows, cols = loaded.decoder_handoff().grid
    scores = (x * grad).sum(-1).abs()[0, -rows * cols:]
    return (scores / scores.sum()).detach()


def test_maps_equal_the_plain_reference(loaded, blocks):
    decoder = make_decoder(loaded)
    grounder = Grounder(decoder, batch_size=64)
    layers = sorted(blocks)
    x = torch.cat([grounder.normalised_tokens(blocks[k]) for k in layers])
    origin = [(k, i) for k in layers for i in range(N_PHOTOS)]
    decoded = decoder.generate(grounder.decoder_inputs(x))
    # captions of different lengths in one batch (a map is defined for any token sequence)
    token_ids = [ids if j % 3 else ids[:1 + j % 7] for j, ids in enumerate(decoded.token_ids)]
    assert len({len(ids) for ids in token_ids}) > 2
    maps = grounder.maps(x, token_ids)

    rows, cols = grounder.grid
    assert maps.shape == (len(origin), rows * cols) and grounder.grid == loaded.decoder_handoff().grid
    assert torch.allclose(maps.sum(-1), torch.ones(len(origin)), atol=1e-5)
    start = decoder.settings.sot_token_id
    assert start == SOT_TOKEN_ID or loaded.family != COCA
    worst = 0.0
    for j, (k, i) in enumerate(origin):
        expected = reference_map(loaded, start, blocks[k][i:i + 1], token_ids[j])
        worst = max(worst, float((maps[j] - expected).abs().max()))
    assert worst <= TOLERANCE, f"{loaded.name}: largest difference from the reference {worst:.2e}"
    assert float(maps.std(-1).min()) > 0  # the maps are not uniform: the caption depends on where it looks


def test_handoff_halves_make_the_decoder_input(loaded, blocks):
    """``rest(normalise(H))`` is exactly what captioning decodes from (``image_embeddings``), and the
    grid's patches are the last tokens of every block output."""
    decoder = make_decoder(loaded)
    handoff = decoder.handoff()
    with torch.no_grad():
        for k, h in blocks.items():
            assert torch.equal(handoff.rest(handoff.normalise(h)).to(decoder.dtype), decoder.image_embeddings(h))
    rows, cols = handoff.grid
    assert blocks[0].shape[1] == rows * cols + 1  # every tiny encoder here has one CLS token, first


def test_caption_step_writes_the_maps_and_their_grid(tmp_path):
    """``grounding``: the captions table gets the float16 map of every row and the grid in its
    metadata; each map is the reference's of that row's features and caption."""
    from latent_verbalizer.components.caption.caption import CaptionSettings, run_caption
    from latent_verbalizer.components.common.contracts import (
        CAPTIONS_GROUNDED_SCHEMA,
        CAPTIONS_META_GROUNDING_GRID,
        CAPTIONS_SCHEMA,
    )
    from latent_verbalizer.components.common.features import iter_feature_chunks
    from latent_verbalizer.components.common.tables import read_table, table_metadata
    from latent_verbalizer.components.extract.extract import ExtractSettings, run_extract
    from tests.images import jpeg_shard

    jpeg_shard(str(tmp_path / "g-000000.tar"), 3)
    run_extract([str(tmp_path / "g-000000.tar")], str(tmp_path / "f"),
                ExtractSettings(model="tiny-random-blip", device="cpu", layers="0,3", dtype="float32"))
    (manifest,) = run_caption(str(tmp_path / "f"), str(tmp_path / "c"),
                              CaptionSettings(device="cpu", batch_size=4, grounding=True))  # batches cross layers
    assert manifest["parameters"]["grounding"] is True
    table = read_table(str(tmp_path / "c" / "g-000000" / "captions.parquet"), CAPTIONS_GROUNDED_SCHEMA)
    assert table.schema.field("grounding").type == CAPTIONS_GROUNDED_SCHEMA.field("grounding").type
    assert table_metadata(table)[CAPTIONS_META_GROUNDING_GRID] == [4, 4]
    rows = table.to_pylist()
    assert len(rows) == 6

    loaded = load_model("tiny-random-blip")
    start = make_decoder(loaded).settings.sot_token_id
    (chunk,) = list(iter_feature_chunks(str(tmp_path / "f" / "g-000000"), [0, 3]))
    for row in rows:
        i = chunk.image_keys.index(row["image_key"])
        expected = reference_map(loaded, start, chunk.layers[row["layer"]][i:i + 1].float(), row["token_ids"])
        got = torch.tensor(row["grounding"], dtype=torch.float32)
        assert got.shape == (16,) and abs(float(got.sum()) - 1) < 1e-2
        assert float((got - expected).abs().max()) < 1e-3  # float16 storage

    # without the option the table is as before: no column, no grid
    (plain,) = run_caption(str(tmp_path / "f"), str(tmp_path / "c2"), CaptionSettings(device="cpu"))
    assert "grounding" not in plain["parameters"]
    table = read_table(str(tmp_path / "c2" / "g-000000" / "captions.parquet"))
    assert table.schema.names == CAPTIONS_SCHEMA.names
    assert CAPTIONS_META_GROUNDING_GRID not in table_metadata(table)


def test_interpret_json_and_pngs_carry_the_maps(tmp_path, capsys):
    import json
    import os

    from latent_verbalizer.pipeline.cli import main

    image = skimage_photo_paths()[0]
    command = ["interpret", image, "--model", "tiny-random-coca", "--layers", "0,5", "--device", "cpu", "--grounding"]
    assert main(command + ["--json"]) == 0
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [line["layer"] for line in lines] == [0, 5]
    for line in lines:
        assert line["grounding"]["grid"] == [8, 8] and len(line["grounding"]["weights"]) == 64
        assert abs(sum(line["grounding"]["weights"]) - 1) < 1e-5

    # the same maps as the reference's, from the same image's block outputs
    from PIL import Image

    loaded = load_model("tiny-random-coca")
    pixels = loaded.preprocess(Image.open(image).convert("RGB"))[None]
    for line, block in zip(lines, loaded.vision_block_outputs(pixels, [0, 5])):
        expected = reference_map(loaded, SOT_TOKEN_ID, block, line["token_ids"])
        assert float((torch.tensor(line["grounding"]["weights"]) - expected).abs().max()) < TOLERANCE

    assert main(command + ["--grounding-dir", str(tmp_path / "maps")]) == 0
    name = os.path.splitext(os.path.basename(image))[0]
    assert sorted(os.listdir(tmp_path / "maps")) == [f"{name}.layer0.png", f"{name}.layer5.png"]
    with Image.open(tmp_path / "maps" / f"{name}.layer5.png") as png:
        assert png.format == "PNG" and min(png.size) > 200
    assert "grounding maps: 2 PNGs" in capsys.readouterr().out


def test_bfloat16_decoding_gives_maps_near_the_float32_ones():
    """At --precision bfloat16 the maps come from the bfloat16 decoder: still maps (sum 1), and
    close to the float32 ones, not another quantity."""
    blocks32 = None
    maps = {}
    for precision in ("float32", "bfloat16"):
        loaded = load_model("tiny-random-blip")  # a fresh model: the bfloat16 decoder casts its modules in place
        if blocks32 is None:
            from PIL import Image

            pixels = loaded.preprocess(Image.open(skimage_photo_paths()[0]).convert("RGB"))[None]
            blocks32 = torch.cat(loaded.vision_block_outputs(pixels, list(range(loaded.n_layers))))
        grounder = Grounder(make_decoder(loaded, precision=precision))
        x = grounder.normalised_tokens(blocks32)
        token_ids = [[5, 9, 11, 102]] * len(x)  # the same caption for both
        maps[precision] = grounder.maps(x, token_ids)
    assert torch.allclose(maps["bfloat16"].sum(-1), torch.ones(len(blocks32)), atol=1e-5)
    assert float((maps["bfloat16"] - maps["float32"]).abs().max()) < 0.02  # 0.004 measured; the largest weights ~0.2
    assert not torch.equal(maps["bfloat16"], maps["float32"])
