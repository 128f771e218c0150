"""The applications built on the model and the data: training, evaluation, play, the demo, the
ablations, encoding, the plugin scaffold and the command line."""
