"""`python -m cli`: the same as the `iaas` console script."""

from cli.main import main

main(prog_name="iaas")
