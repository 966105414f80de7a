"""``bincount predict``: a bundle's counts for image files, folders, ABID roots and ``s3://`` prefixes.

Modules: :mod:`.inputs` (what to read), :mod:`.dataset` (decoding with the training rules),
:mod:`.writer` (the streamed CSV and the scores), :mod:`.cli` (the subcommand).
"""
