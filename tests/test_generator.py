"""Descriptions -> adapter folders' bytes (t2l_ray/generator.py), on a tiny checkpoint and the offline encoder."""

import json

from t2l_ray import adapters, checkpoint
from t2l_ray.generator import Generator


def test_render_embeddings_is_the_generators_path(tiny_ckpt, minilm):
    """Embedding first and rendering after gives the bytes of `Generator.render`, metadata added."""
    generator = Generator(checkpoint.load_checkpoint(tiny_ckpt[0]), encoder=minilm)
    texts, ids = ["Sort the words.", "Add the numbers."], ["sort", "add"]
    whole = generator.render(texts, ids)
    split = generator.render_embeddings(minilm.encode(texts), texts, ids, extra_meta=[None, {"metadata": {"k": 1}}])
    assert [f.files[adapters.WEIGHTS_FILE] for f in whole] == [f.files[adapters.WEIGHTS_FILE] for f in split]
    assert json.loads(split[1].files[adapters.META_FILE])["metadata"] == {"k": 1}
