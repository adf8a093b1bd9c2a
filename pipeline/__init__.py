"""The KFP pipeline (``latent_verbalizer.pipeline``): the DAG, compile, local run, submit, and the ``lverb`` CLI.

Nothing under ``latent_verbalizer.components`` imports from here: imports point down.
"""
