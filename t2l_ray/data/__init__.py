"""The data layer: SNI task files, task descriptions, T2L prompts and tokens, and a generated demo suite.

Pure Python (no Ray): the Ray Data pipelines call these functions per file, per row or per batch.
"""
