"""Bytes in and out: storage (local paths, ``file://``, ``s3://``), the one retry layer that
waits storage outages out, the user's storage errors in one line, and the image codec (decode,
encode, the metadata that travels with an image, pixel arrays <-> tensors)."""
