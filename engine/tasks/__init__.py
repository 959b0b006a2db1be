"""Command tasks. Importing this package registers nothing: each module registers its own."""
