"""Load an ALBERT checkpoint (MLX or transformers folder, or Hub repo id), run it, and fill masks.

python examples/quickstart.py [checkpoint]     (default: the bundled pydoc-small)"""

import sys

import mlx_albert

path = sys.argv[1] if len(sys.argv) > 1 else "pydoc-small"  # the model shipped in the package
model, tokenizer = mlx_albert.load(path, return_tokenizer=True)  # the class follows config.json
config = model.config
print(
    f"{type(model).__name__}: {config.num_blocks} blocks x {config.block_depth} layer(s) sharing "
    f"{config.num_groups} group(s), hidden {config.hidden_size}, embedding {config.embedding_size}, "
    f"{model.num_parameters():,} parameters ({str(model.dtype).removeprefix('mlx.core.')})"
)

batch = tokenizer(["Return a new [MASK] containing all items from the iterable."], return_tensors="mlx")
out = model(**batch, output_hidden_states=True)
print("hidden states:", len(out.hidden_states), "x", out.hidden_states[-1].shape)

# The same model behind transformers' fill-mask pipeline interface:
unmask = mlx_albert.pipeline("fill-mask", path)
for text in [
    "Return a new [MASK] containing all items from the iterable.",
    "The [MASK] statement is used to leave a loop early.",
    "Raise a [MASK] if the key is not found.",
]:
    answers = ", ".join(f"{a['token_str']} ({a['score']:.2f})" for a in unmask(text, top_k=3))
    print(f"{text}\n    -> {answers}")
