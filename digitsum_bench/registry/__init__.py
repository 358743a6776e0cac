"""What can be run: the recipes (one decorated function each), the models, the losses and the budgets."""
