"""FaceDApps training pipeline (data, preprocessing, model, training, evaluation, export)."""
