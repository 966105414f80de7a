"""Helpers that several test files share: run tiny trainings, the SageMaker fakes, planted secrets, a server.

Test files import from here (``from helpers.train import run_train``), never from one another: a test
module imported by another runs its module-level code twice and ties the two files' fixtures together.
The fixtures among them (moto_server, the fake SageMaker) are registered for every test file by
``tests/conftest.py`` (``pytest_plugins``), so test files use them by name without importing them.
"""
