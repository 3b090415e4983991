"""What a build starts from: recipes (parsed and validated), model and data sources, datasets, plugins."""
