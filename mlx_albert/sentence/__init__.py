"""Sentence embeddings: sentence-transformers' folder config (folder.py), its pooling and Dense head
(pooling.py), the encoder (encoder.py), vector arithmetic and quantization (ops.py), the sharded
vector folders (vectors.py, shards.py), search over them (search.py) and the training losses
(losses.py). Import from the modules: this package's init stays empty so that checkpoint reading
(hub.py) can read a folder's config without loading the encoder."""
