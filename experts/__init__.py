"""Built-in action modalities of Astra world, loaded through the `astra` entry-point group like any plugin."""
