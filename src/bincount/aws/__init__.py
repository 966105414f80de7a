"""AWS names, prices and the boto3 session that both the SageMaker launcher and ``bincount deploy`` use.

Why a package of its own, below both: deploy imported them from the launcher's package, so a change to the
launcher could break endpoints; here they depend on nothing of bincount.
"""
