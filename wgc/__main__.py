"""wgc [-f|--foreground] IFACE | wgc --version"""
import platform
import sys

from wgc import __version__

USAGE = "Usage: wgc [-f/--foreground] INTERFACE-NAME"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--version"]:
        print(f"wgc v{__version__}\n\nUserspace WireGuard daemon for linux-{platform.machine()}.\n"
              "Information available at https://www.wireguard.com.")
        return 0
    if len(args) == 2 and args[0] in ("-f", "--foreground"):
        foreground, iface = True, args[1]
    elif len(args) == 1 and not args[0].startswith("-"):
        foreground, iface = False, args[0]
    else:
        print(USAGE)
        return 1
    from wgc import daemon  # only now: --version and usage stay instant

    return daemon.main(iface, foreground)


if __name__ == "__main__":
    sys.exit(main())
