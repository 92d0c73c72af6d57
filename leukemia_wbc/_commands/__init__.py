"""Subcommands of the ``leukemia-wbc`` command line (private: use :func:`leukemia_wbc.cli.main`)."""
