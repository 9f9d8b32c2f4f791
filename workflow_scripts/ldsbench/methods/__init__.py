"""Attribution methods, one module per method type. Each is declared once in
the registry ``ldsbench.spec.method_types`` (its scorer, hyperparameter,
inputs and recipe); the workflow asks the registry, never a type's name."""
