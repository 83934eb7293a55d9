"""``certflow verify``: pure checks (checks.py) over observed facts (observe.py)."""
