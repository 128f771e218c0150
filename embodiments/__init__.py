"""Built-in embodiments of Astra world (dataset readers and toy worlds), loaded through the `astra` entry points."""
