"""What serving and training share: labels, preprocessing and the crop rule, face detection,
the Keras custom objects, the model folder, and the classifier runtimes."""
