"""The ``pacore`` command line (typer + rich)."""
