"""execbudget: execution budgets held before the spend."""
