"""What each task restores: one typed spec per task (training ranges, evaluation protocol,
validation, named real-world cases) and the degradations they synthesize from clean images
(noise, blur, resizing, JPEG, inpainting masks), each a pure function of a seeded generator."""
