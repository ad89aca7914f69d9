"""Training package: datasets, models, recipes, training loop and reports for CIFAR classifiers."""
