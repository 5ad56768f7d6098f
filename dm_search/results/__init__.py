"""Presenting a study's results: queries over its trials (``query``), figures, tables, the
self-contained HTML report, the dashboard's figures and note, and the export of the best EDF
to a file.

Reads the database through ``dm_search.storage``; imports plotly; never ray.
"""
