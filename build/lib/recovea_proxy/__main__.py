"""`python -m recovea_proxy` runs the command line."""

from recovea_proxy.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
