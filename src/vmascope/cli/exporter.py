"""``vmascope exporter``: serve the host's map counts to Prometheus."""

from __future__ import annotations

import argparse
import sys
import threading

from ..errors import UsageError
from .common import add_verb

DESCRIPTION = """\
Read every process's map count in the background (every --interval seconds) and serve
the latest reading at http://LISTEN/metrics for Prometheus; with --textfile DIR, also
write DIR/vmascope.prom atomically for node_exporter's textfile collector. Metrics:
vm.max_map_count, map count, ratio to the limit and RSS of the --top N processes, totals
per comm, VMA budget causes of the --causes N first, and the exporter's own scrape
duration and errors (deploy/ has alerting rules and a Grafana dashboard).
Exit codes: 0 stopped, 1 cannot listen, 2 usage, 8 cannot write the textfile."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_verb(subparsers, "exporter", "a Prometheus exporter of map counts", DESCRIPTION,
                 run)
    p.add_argument("--listen", default="127.0.0.1:9464", metavar="HOST:PORT",
                   help="address to serve /metrics on (default 127.0.0.1:9464)")
    p.add_argument("--no-listen", action="store_true",
                   help="serve nothing (with --textfile)")
    p.add_argument("--top", type=int, default=20, metavar="N",
                   help="per-process series for the N processes with most VMAs (20)")
    p.add_argument("--causes", type=int, default=3, metavar="N",
                   help="VMA budget causes for the N processes with most VMAs (3)")
    p.add_argument("--interval", type=float, default=15.0, metavar="S",
                   help="seconds between readings of the host (15)")
    p.add_argument("--cmdline", action="store_true",
                   help="add a cmdline label to the per-process series")
    p.add_argument("--textfile", metavar="DIR",
                   help="also write DIR/vmascope.prom after each reading")
    p.add_argument("--once", action="store_true",
                   help="read once, write the textfile (or print the metrics) and exit")


def run(args: argparse.Namespace) -> int:
    from ..monitor.exporter import Exporter, check_textfile_dir, parse_listen, serve

    if args.top < 0 or args.causes < 0:
        raise UsageError("--top and --causes take a number >= 0")
    if not 0.1 <= args.interval <= 86400:
        raise UsageError("--interval takes seconds between 0.1 and 86400")
    try:
        address = parse_listen(args.listen)
    except ValueError:
        raise UsageError(f"--listen {args.listen!r}: expected HOST:PORT, "
                         "e.g. 127.0.0.1:9464") from None
    if args.textfile:
        check_textfile_dir(args.textfile)
    exporter = Exporter(top=args.top, interval=args.interval, causes=args.causes,
                        cmdline=args.cmdline, textfile=args.textfile)
    if args.once:
        body = exporter.read_once()
        if not args.textfile:
            sys.stdout.write(body.decode())
        return 0
    if args.no_listen:
        if not args.textfile:
            raise UsageError("--no-listen needs --textfile DIR (else nothing is exported)")
        exporter.run_forever()  # until a signal ends it
        return 0
    server = serve(exporter, address)
    exporter.start(process=True)
    print(f"vmascope exporter: http://{address[0]}:{server.server_address[1]}/metrics",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        threading.Thread(target=server.shutdown, daemon=True).start()
        exporter.stop()
        server.server_close()
    return 0
