#!/usr/bin/env python
"""A GPU lease in one step (configuration/gpu_lease.json; fusion_lstm_reproduction/lease.py says how it works).

    python gpu_lease.py carry                                  # here: .carry/ (wheels, MiniLM in float16, data), size checked
    python3 gpu_lease.py run --install_wheels --out "$OUT"     # on the device (carry .carry): runs, packs $OUT/lease.tar.gz
    python gpu_lease.py unpack <files_at>/lease.tar.gz         # here: the results into results/, then reproduce.py report
    python gpu_lease.py run --smoke_test                       # here, on CPU: every run for two steps

`--install_wheels` installs the carried wheels into a folder of its own before anything imports transformers: the
device's packages are older than this project needs.
"""

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent
SITE = Path("/tmp/fusion_lstm_site")


def install_carried_wheels(carry: Path):
    """pip installs the carry's wheels (no index, no dependencies) into SITE and puts it first on the path, for this
    process and the runs it starts. Standard library only: nothing that the wheels replace is imported yet."""
    wheels = sorted((carry / "wheels").glob("*.whl"))
    if not wheels:
        raise FileNotFoundError(f"{carry / 'wheels'} holds no wheels: build the carry with `python gpu_lease.py carry`.")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--target", str(SITE), *map(str, wheels)], check=True)
    sys.path.insert(0, str(SITE))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITE), os.environ.get("PYTHONPATH")]))


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    carry = commands.add_parser("carry", help="Build the carry here.")
    carry.add_argument("--carry", default=str(ROOT / ".carry"), help="The folder to fill (replaced).")
    carry.add_argument("--data_dir", default=None, help="Where the data is read (default: ../shared/data).")
    run = commands.add_parser("run", help="Run the lease (on the device; with --smoke_test, anywhere).")
    run.add_argument("--carry", default=str(ROOT / ".carry"))
    run.add_argument("--out", default=None, help="Where lease.tar.gz and lease.json go (the device's $OUT).")
    run.add_argument("--install_wheels", action="store_true", help="Install the carried wheels first (the device).")
    run.add_argument("--smoke_test", action="store_true", help="Two steps per run on a few sentences, into "
                                                                "results/smoke.")
    run.add_argument("--only", nargs="+", default=None, help="Just these runs, as experiment/run_id.")
    run.add_argument("--workers", type=int, default=None, help="Trainings at a time (default: the lease's).")
    run.add_argument("--deadline", type=float, default=None, help="Seconds for all runs (default: the lease's); "
                                                                    "what is unfinished then is stopped.")
    run.add_argument("--results_dir", default=str(ROOT / "results"), help="Where results JSONs and runs go.")
    unpack = commands.add_parser("unpack", help="Unpack a lease's results into results/ (everything checked first).")
    unpack.add_argument("archive")
    unpack.add_argument("--results_dir", default=str(ROOT / "results"))
    unpack.add_argument("--replace", action="store_true", help="Replace committed files that the archive holds with "
                                                               "other content (refused without it, naming them).")
    unpack.add_argument("--smoke_test", action="store_true", help="The archive of a `run --smoke_test`: into "
                                                                  "results/smoke.")
    args = parser.parse_args(argv)

    logging.basicConfig(format="%(asctime)s - %(name)s - %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    if args.command == "run" and args.install_wheels:
        install_carried_wheels(Path(args.carry))
    os.chdir(ROOT)  # the experiments name their files relative to the repository
    from fusion_lstm_reproduction import lease

    if args.command == "carry":
        lease.build_carry(args.carry, data_dir=args.data_dir)
    elif args.command == "run":
        summary = lease.run_lease(carry=args.carry, out=args.out, smoke_test=args.smoke_test, only=args.only,
                                  workers=args.workers, results_dir=args.results_dir,
                                  deadline=args.deadline)
        failed = [key for key, r in summary["runs"].items() if r.get("status") not in ("done", "done before")]
        if failed:
            print(f"{len(failed)} runs did not finish: {', '.join(failed)}")
            sys.exit(1)
    else:
        from fusion_lstm_reproduction.lease_archive import unpack

        for name in unpack(args.archive, args.results_dir, replace=args.replace, smoke_test=args.smoke_test):
            print(name)


if __name__ == "__main__":
    from fusion_lstm_data.cli import run_command

    run_command(main)
