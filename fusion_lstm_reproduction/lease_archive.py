"""A lease's archive (lease.tar.gz, packed by lease.pack) unpacked into results/ (`unpack`): every member is read and
checked before any file is written, so that a broken, hostile or misfiled archive leaves the committed results as
they were.

What an archive may hold, below its scale's folder (lease.json says which scale):
    <scale>/lease.json                                the lease's summary
    <scale>/<experiment>/<run>.json                   a results JSON (checked as the report reads it: records.Result)
    <scale>/<experiment>/runs/<run>/arguments.json    a run's arguments
    <scale>/<experiment>/runs/<run>/log.txt           a run's log
Anything else (figures, other scales, links, folders) is refused, as are sizes beyond what a lease can produce.
"""

import os
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fusion_lstm_data.files import parse_json_object

from .experiments import ROOT, SCALES, experiment_kinds
from .records import RESULT_FIELDS, Result


MIB = 1024 * 1024
# a lease is one command of at most 10 minutes: its logs and JSONs stay far below these
MAX_MEMBER_BYTES = 16 * MIB
MAX_ARCHIVE_BYTES = 128 * MIB
MAX_MEMBERS = 5000
MAX_NAME_PART_BYTES = 200  # with the temporary name's 11 bytes, below the 255 of common file systems
RUN_FILES = ("arguments.json", "log.txt")


@dataclass
class Member:
    """One checked file of the archive: its name (relative to the results folder), its bytes and where it goes."""

    name: str
    data: bytes
    target: Path


def unpack(archive: str | Path, results_dir: str | Path = ROOT / "results", replace: bool = False,
           smoke_test: bool = False) -> list[str]:
    """Unpacks a lease's archive into results_dir (a smoke test's, with `smoke_test`, into results_dir/smoke, where
    `run --smoke_test` writes) and returns the results JSONs it held. Every member is checked first (names, sizes,
    the JSONs' contents, the lease's scale and whether it was a smoke test); a file that already exists with other
    content is replaced only with `replace`. Files are written under a temporary name and renamed into place once
    all are written."""
    results_dir = Path(results_dir).resolve() / ("smoke" if smoke_test else "")
    members = read_members(Path(archive), results_dir)
    scale = check_lease(members, archive, smoke_test)
    kinds = experiment_kinds()
    for member in members:
        check_member(member, scale, kinds, archive)
    # each member against the file it would replace, read once: new, the same, or changed
    status = ["new" if not m.target.exists() else "same" if m.target.read_bytes() == m.data else "changed"
              for m in members]
    changed = [m for m, s in zip(members, status) if s == "changed"]
    if changed and not replace:
        raise FileExistsError(
            f"{archive} would replace {len(changed)} committed file(s) with other content: "
            f"{', '.join(m.name for m in changed[:10])}{' …' if len(changed) > 10 else ''}. Nothing was written; "
            "check that this is a new lease of these runs, then unpack with --replace.")
    write_all([m for m, s in zip(members, status) if s != "same"])
    return [m.name for m in members if is_result(m.name)]


def read_members(archive: Path, results_dir: Path) -> list[Member]:
    """Every member's bytes, each name and size checked, counted as they are read (not trusted from the headers)."""
    members, total, names = [], 0, set()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for info in tar:
                if len(members) >= MAX_MEMBERS:
                    raise ValueError(f"{archive} holds more than {MAX_MEMBERS} files, more than a lease writes; "
                                     "nothing was unpacked.")
                name = checked_name(info, archive, results_dir, names)
                names.add(info.name)
                data = tar.extractfile(info).read(MAX_MEMBER_BYTES + 1)
                total += len(data)
                if len(data) > MAX_MEMBER_BYTES or total > MAX_ARCHIVE_BYTES:
                    raise ValueError(f"{archive}: {name!r} takes the archive past {MAX_MEMBER_BYTES // MIB} MiB a file "
                                     f"or {MAX_ARCHIVE_BYTES // MIB} MiB in all, more than a lease writes; nothing "
                                     "was unpacked.")
                if len(data) != info.size:
                    raise ValueError(f"{archive}: {name!r} is cut short; nothing was unpacked.")
                members.append(Member(info.name, data, (results_dir / info.name).resolve()))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise ValueError(f"{archive} is not a complete lease archive (a .tar.gz): {type(error).__name__}: {error}. "
                         "Fetch it again; nothing was unpacked.") from None
    return members


def checked_name(info: tarfile.TarInfo, archive: Path, results_dir: Path, seen: set[str]) -> str:
    """The member's name, refused unless it names a plain file inside the results folder, once, in printable parts
    short enough for a file system; returns it as it may be printed."""
    name = info.name
    shown = ascii(name)
    if not name.isprintable():
        raise ValueError(f"{archive}: the member {shown} has a control character in its name; nothing was unpacked.")
    target = (results_dir / name).resolve()
    if not info.isfile() or results_dir not in target.parents:
        raise ValueError(f"{archive}: {shown} is not a file inside the results folder; nothing was unpacked.")
    if any(len(part.encode()) > MAX_NAME_PART_BYTES for part in PurePosixPath(name).parts):
        raise ValueError(f"{archive}: {shown} has a name part over {MAX_NAME_PART_BYTES} bytes; nothing was unpacked.")
    if name in seen:
        raise ValueError(f"{archive} holds {shown} twice; nothing was unpacked.")
    if target.is_dir():
        raise ValueError(f"{archive}: {shown} would replace the folder {target}; nothing was unpacked.")
    return name


def check_lease(members: list[Member], archive, smoke_test: bool) -> str:
    """The scale of the archive's one lease.json, which must agree with `smoke_test`."""
    summaries = [m for m in members if len(PurePosixPath(m.name).parts) == 2 and m.name.endswith("/lease.json")]
    if len(summaries) != 1:
        raise ValueError(f"{archive} holds {len(summaries)} lease summaries (<scale>/lease.json), not one: not an "
                         "archive of gpu_lease.py run; nothing was unpacked.")
    summary = parse_json_object(summaries[0].data, f"{archive}:{summaries[0].name}", "lease summary",
                                ("scale", "smoke_test", "runs"))
    scale = summary["scale"]
    if scale not in SCALES or PurePosixPath(summaries[0].name).parts[0] != scale:
        raise ValueError(f"{archive}: {summaries[0].name} is the summary of a lease at scale {scale!r}; the scales "
                         f"are {', '.join(SCALES)}, under their own folder. Nothing was unpacked.")
    smoke = summary["smoke_test"]
    if not isinstance(smoke, bool):
        raise ValueError(f"{archive}: {summaries[0].name} says smoke_test {smoke!r}, not true or false; nothing was "
                         "unpacked.")
    if smoke and not smoke_test:
        raise ValueError(f"{archive} is a smoke test's (two steps per run on a few sentences), not results: unpack it "
                         "with --smoke_test, into results/smoke. Nothing was unpacked.")
    if smoke_test and not smoke:
        raise ValueError(f"{archive} is a real lease's, not a smoke test's: unpack it without --smoke_test. Nothing "
                         "was unpacked.")
    return scale


def is_result(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return len(parts) == 3 and parts[2].endswith(".json")


def check_member(member: Member, scale: str, kinds: dict[str, str], archive) -> None:
    """A member is one of the files a lease packs (module docstring), with the content its kind must have."""
    parts = PurePosixPath(member.name).parts
    where = f"{archive}:{member.name}"
    if parts[0] != scale:
        raise ValueError(f"{where}: a lease at scale {scale!r} writes only under {scale}/; nothing was unpacked.")
    if len(parts) == 2 and parts[1] == "lease.json":
        return
    if len(parts) >= 3 and parts[1] not in kinds:
        raise ValueError(f"{where}: unknown experiment {parts[1]!r}; nothing was unpacked.")
    if is_result(member.name):
        Result.checked(parse_json_object(member.data, where, "results file", RESULT_FIELDS), member.target, kinds)
    elif len(parts) == 5 and parts[2] == "runs" and parts[4] in RUN_FILES:
        if parts[4].endswith(".json"):
            parse_json_object(member.data, where, "run's arguments")
    else:
        raise ValueError(f"{where} is not a file a lease writes (<scale>/lease.json, <scale>/<experiment>/<run>.json, "
                         f"<scale>/<experiment>/runs/<run>/{{{','.join(RUN_FILES)}}}); nothing was unpacked.")


def write_all(members: list[Member]) -> None:
    """Each member under a temporary name beside its target, then all renamed into place; a failure while writing
    removes the temporary files and leaves every target as it was."""
    written = []
    try:
        for member in members:
            member.target.parent.mkdir(parents=True, exist_ok=True)
            temporary = member.target.with_name(f".{member.target.name}.unpacking")
            written.append((temporary, member.target))
            temporary.write_bytes(member.data)
    except OSError:
        for temporary, _ in written:
            temporary.unlink(missing_ok=True)
        raise
    for temporary, target in written:
        os.replace(temporary, target)
