"""Reporting: every table, page and card a reader sees, formatted one way.

- ``formatting``: metric labels, the interval and p-value formatters, the headline-horizon rule (imports nothing
  of crlm's, so any layer may use it);
- ``leaderboard``: the benchmark's leaderboard as text columns and as a self-contained HTML page;
- ``model_card`` (with ``card_sections``, ``card_results`` and ``card_html``): the TRIPOD+AI model card.

This ``__init__`` imports nothing, so that ``crlm.reporting.formatting`` loads without the layers above it.
"""
