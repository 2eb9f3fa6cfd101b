"""``python -m pacore_graph.cli``: the same as the ``pacore`` command."""

from pacore_graph.cli.main import main

main()
