"""The job side: what runs inside the training container (the entry, its networking, the contract files,
the installed-pins check, the config check and result file, the pickled-task runner).

It imports only the standard library and itself at module level (``tests/test_sagemaker_job_side.py``
imports what the job's command reaches in a fresh interpreter): the container has what pip installed for
the job, not the launcher's machine. The launcher side (the rest of ``bincount.sagemaker``) may import
this package's constants and contract; nothing here imports the launcher side.
"""
