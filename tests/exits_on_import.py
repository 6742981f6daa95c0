"""A task module that ends the process when it is imported (as a script's argparse would)."""

import sys

sys.exit(2)


def never():
    return "never"
