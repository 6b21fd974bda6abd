"""wgc [-f|--foreground] IFACE | wgc --version | wgc --wg [wg(8) arguments]
| wgc --wg-quick [wg-quick(8) arguments] | wgc --proxy CONFIG

Run under the name `wg` (a symlink to wgc), or as `wgc --wg ...`, wgc is
wg(8); under the name `wg-quick`, or as `wgc --wg-quick ...`, wg-quick(8).
An option, not a `wgc wg` subcommand: `wgc NAME` starts the daemon for any
interface name, "wg" included, and only names starting with "-" are never
taken as interface names.
"""
import os
import sys

from wgc import __version__

USAGE = "Usage: wgc [-f/--foreground] INTERFACE-NAME"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if argv is None and os.path.basename(sys.argv[0]) == "wg":
        from wgc.control.wgtool import main as wg_main

        return wg_main(args, sys.argv[0])
    if argv is None and os.path.basename(sys.argv[0]) == "wg-quick":
        from wgc.control.wgquick import main as wg_quick_main

        return wg_quick_main(args, "wg-quick")
    if args[:1] == ["--wg-quick"]:
        from wgc.control.wgquick import main as wg_quick_main

        return wg_quick_main(args[1:], "wgc --wg-quick")
    if args[:1] == ["--wg"]:
        from wgc.control.wgtool import main as wg_main

        return wg_main(args[1:], "wgc --wg", extended=True)
    if args[:1] == ["--proxy"]:
        from wgc.proxy.main import main as proxy_main

        return proxy_main(args[1:])
    if args == ["--version"]:
        import platform  # only here: it costs every other start a few milliseconds

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
