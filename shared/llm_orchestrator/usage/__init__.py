"""What provider calls cost and who may spend more: the price table, the ledger of calls
and the monthly budgets.

Pure domain code with no provider SDK, so the API groups that show usage, pricing and
budgets load it without the execution machinery (``engine``, ``steps``, ``providers``).
"""
