"""`python -m archlint`: the command line."""
from .cli import main

main()
