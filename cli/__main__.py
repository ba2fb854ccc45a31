"""`python -m deltarubric.cli ...`, the same as the `deltarubric` console script."""

from deltarubric.cli.main import main

main()
