"""`python -m impulses` runs the command-line interface."""

from impulses.cli import main

if __name__ == "__main__":
    main()
