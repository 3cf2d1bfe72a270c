"""Quality: what each image needs and how well it was restored. ``assess`` measures an image
(noise level, JPEG quality, blockiness, blur); ``routing`` decides from those measures which model
restores it, at which strength, or none (``--model auto``, ``--route``); ``metrics`` and
``evaluate`` score a model (or a reference method, or a route) as the papers do, under a task's
protocol or a named real-world case."""
