"""Transfer-learning image restoration.

The library (this package) never imports Ray; the Ray entrypoints live in ``jobs/``.

Tensor conventions, stated once: inside the library images are float32 NCHW (or CHW) RGB in
[0, 1]; uint8/uint16 HWC arrays appear only at the codec boundary (``restoration.io.codec``).
"""

__version__ = "0.1.0"
