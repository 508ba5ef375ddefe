"""`python -m phprof`: the phprof command."""
from .commands import main

main()
