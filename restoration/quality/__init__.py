"""Quality as the papers measure it: PSNR and SSIM, and the evaluation of a model (or a
reference method) under a task's protocol or a named real-world case."""
