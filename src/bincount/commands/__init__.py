"""Subcommands of ``bincount`` whose work is a library package's (``s3``, ``shards``, ``bundle``): here only their
arguments and the call, so the library modules hold no command line. Packages that exist for a command
(``predict``, ``serve``, ``deploy``, ``report``, ``compare``, ``sweep``, ``data.synthetic``) keep theirs in their
own ``cli`` modules. Each provides ``add_arguments(parser)``, ``run(args) -> int`` and ``ERRORS``
(``bincount.cli`` registers them and owns the conventions)."""
