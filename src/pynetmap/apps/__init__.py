"""netmap's tools, each a module with ``main(argv)``."""
