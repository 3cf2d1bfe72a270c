"""Self-contained HTML pages rendered from jinja2 templates (autoescaped): the report of a
restore job and the side-by-side comparison of models on a sample."""
