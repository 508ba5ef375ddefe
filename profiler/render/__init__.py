"""Views of an attribution: the frame tree (``frames``) and what renders it
(``html``: an interactive flamegraph page; ``formats``: folded stacks,
speedscope and Perfetto files)."""
