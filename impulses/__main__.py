"""`python -m impulses` runs the command-line interface."""

from impulses.cli import run

if __name__ == "__main__":
    run()
