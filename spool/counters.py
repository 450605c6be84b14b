"""The persistent counter block (ZMailer's SNMP shared segment; SCHED-REF 5, MQ2-REF 9.7).

A file of fixed 64-bit slots mapped with mmap: a header (signature, magic, creation
time, slot count) and one slot per name of :data:`COUNTER_NAMES`, in that order.  Writes
are a dict lookup plus ``struct.pack_into``; nothing is flushed per write.  Cumulative
counters survive restarts; only gauges are zeroed at scheduler startup.  New names may
only ever be appended, so older files stay readable (they are grown on open).
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import time
from typing import Protocol

from spool.errors import SpoolError
from spool.procs import pid_alive

__all__ = [
    "COUNTER_NAMES",
    "MAGIC",
    "CounterBlock",
    "CounterFileError",
    "Counters",
    "format_line",
]

log = logging.getLogger(__name__)

MAGIC = 0x33120006
_SIGNATURE = int.from_bytes(b"ZMPYCNT1", "little")
_HEADER_SLOTS = 4  # signature, magic, creation time, number of counter slots
_SLOT = struct.Struct("<q")


def _ta(prefix: str, middle: str = "") -> str:
    return (
        f"{prefix}.TaProcessStarts {prefix}.TaProcCount-G {prefix}.TaIdleStates "
        f"{prefix}.TaMessages {prefix}.TaDeliveryStarts {middle} "
        f"{prefix}.RcptsOk {prefix}.RcptsRetry {prefix}.RcptsFail"
    )


_SMTP_TA = " ".join(
    f"TA-SMTP.{n}"
    for n in [
        "SmtpStarts",
        "SmtpConnects",
        "SmtpConnectFails",
        "SmtpConnectsCnt-G",
        "LmtpConnects",
        "SmtpPIPELINING",
        "SmtpSTARTTLS",
        "SmtpSTARTTLSok",
        "SmtpSTARTTLSfail",
        "SmtpEHLO",
        "SmtpEHLOok",
        "SmtpEHLOfail",
        "SmtpHELO",
        "SmtpHELOok",
        "SmtpHELOfail",
        "SmtpLHLO",
        "SmtpLHLOok",
        "SmtpLHLOfail",
        "capa8BITMIME",
        "capaAUTH",
        "capaDSN",
        "capaCHUNKING",
        "capaDELIVERBY",
        "capaENHANCEDSTATUSCODES",
        "capaPIPELINING",
        "capaSIZE",
        "capaSTARTTLS",
        "sent-option-ENVID",
        "sent-option-SIZE",
        "sent-option-RET",
        "sent-option-NOTIFY",
        "sent-option-ORCPT",
        "SmtpMAIL",
        "SmtpMAILok",
        "SmtpRCPT",
        "SmtpRCPTok",
        "SmtpDATA",
        "SmtpDATAok",
        "SmtpBDAT",
        "SmtpBDATok",
        "SmtpDATAvolume-kB",
        "SmtpBDATvolume-kB",
    ]
)

# MQ2-REF Appendix A, after the Time_now / creation time / load average header; each
# string is one section (sections are printed separated by one empty line).
_SECTIONS = (
    """
    SYS.RouterMasterPID SYS.RouterMasterStartTime SYS.RouterMasterStarts
    SYS.SchedulerMasterPID SYS.SchedulerMasterStartTime SYS.SchedulerMasterStarts
    SC.SchedulerTimeserverPID SC.SchedulerTimeserverTime SC.SchedulerTimeserverStarts
    SC.SchedulerTimeserverStartTime
    SYS.SmtpServerMasterPID SYS.SmtpServerMasterStartTime SYS.SmtpServerMasterStarts
    SS.SubsysRateTrackerPID SS.SubsysRouterMasterPID SS.SubsysContentfilterMasterPID
    SS.Irouter-reply-delay-G SS.Irouter-queue-G SS.Cfilter-reply-delay-G SS.Cfilter-queue-G
    SYS.SpoolFreeSpace-kB-G SYS.SpoolUsedSpace-kB-G SYS.SpoolFreeFiles-G SYS.SpoolUsedFiles-G
    SYS.TportSpoolFreeSpace-kB-G SYS.TportSpoolUsedSpace-kB-G SYS.TportSpoolFreeFiles-G
    SYS.TportSpoolUsedFiles-G
    SYS.LogFreeSpace-kB-G SYS.LogUsedSpace-kB-G SYS.LogFreeFiles-G SYS.LogUsedFiles-G
    """,
    """
    SS.Processes-G SS.ParallelSMTPconnects-G SS.ParallelSMTPSconnects-G
    SS.ParallelSUBMITconnects-G
    SS.ProcessForks SS.ProcessForkFailures SS.ContentPolicyForkFailures SS.SMTPconnects
    SS.SMTPSconnects SS.SUBMITconnects
    SS.MaxSameIpSourceCloses SS.MaxParallelConnectionCloses SS.SMTPcommands
    SS.SMTPcommands-unknown
    SS.IncomingClientPipelines SS.IncomingSmtpTarpits
    SS.SMTP_HELO SS.SMTP_HELO_ok SS.SMTP_HELO_bad SS.SMTP_EHLO SS.SMTP_EHLO_ok SS.SMTP_EHLO_bad
    SS.SMTP_STARTTLS SS.SMTPTLSes SS.SMTP_STARTTLS_fail SS.SMTP_NOOP SS.SMTP_RSET
    SS.SMTP_HELP SS.SMTP_ETRN
    SS.SMTP_EXPN SS.SMTP_VRFY SS.SMTP_TICK SS.SMTP_TURN SS.SMTP_VERBOSE SS.SMTP_DEBUG
    SS.SMTP_MAIL SS.SMTP_MAIL_ok SS.SMTP_MAIL_bad SS.SMTP_RCPT SS.SMTP_RCPT_ok SS.SMTP_RCPT_bad
    SS.Smtp-Opt-ENVID SS.Smtp-Opt-SIZE SS.Smtp-Opt-AUTH SS.Smtp-Opt-DELIVERBY
    SS.Smtp-Opt-BODY-8BITMIME
    SS.Smtp-Opt-BODY-BINARYMIME SS.Smtp-Opt-BODY-7BIT SS.Smtp-Opt-RETURN
    SS.Smtp-Opt-NOTIFY SS.Smtp-Opt-ORCPT
    SS.SMTP_DATA SS.SMTP_DATA_ok SS.SMTP_DATA_bad SS.SMTP_BDAT SS.SMTP_BDAT_ok SS.SMTP_BDAT_bad
    SS.SMTP_DATA-kB SS.SMTP_BDAT-kB SS.SMTP_input_spool-kB
    SS.ReceivedMessages SS.ReceivedRecipients SS.TransmittedMessages
    SS.TransmittedRecipients
    """,
    """
    RT.RouterProcesses-G RT.RouterProcessForks RT.RouterProcessFaults RT.ReceivedMessages
    RT.ReceivedRecipients
    RT.TransmittedMessages RT.TransmittedRecipients RT.ReceivedVolume-kB
    RT.TransmittedVolume-kB
    RT.TransmittedVolume2-kB RT.StoredMessages-G RT.StoredVolume-kB-G
    """,
    """
    SC.ReceivedMessages SC.ReceivedRecipients SC.TransmittedMessages SC.TransmittedRecipients
    SC.StoredMessages-G SC.StoredThreads-G SC.StoredVertices-G SC.StoredRecipients-G
    SC.ReceivedVolume-kB SC.StoredVolume-kB-G SC.TransmittedVolume-kB
    SC.TransportAgentForks SC.TransportAgentProcesses-G SC.TransportAgentsActive-G
    SC.TransportAgentsIdle-G
    SC.MQ2Parallel-G SC.MQ2Connects SC.MQ2TcpWrapRej SC.MQ2AuthRej SC.MQ2TimedOut
    SC.MQ2ReadEOF
    SC.MQ2ReadFails SC.MQ2WriteFails SC.MQ2Commands SC.MQ2CommandsRej SC.MQ2CommandAUTH
    SC.MQ2CommandQUIT
    SC.MQ2CommandETRN SC.MQ2CommandKillThr SC.MQ2CommandKillMsg SC.MQ2CommandKillProcess
    SC.MQ2CommandRerouteThr SC.MQ2CommandRerouteMsg SC.MQ2CommandShowQueueThreads
    SC.MQ2CommandShowQueueThreads2
    SC.MQ2CommandShowQueueShort SC.MQ2CommandShowQueueVeryShort SC.MQ2CommandShowThread
    SC.MQ2CommandShowCounters
    """,
    _ta("TA-SMTP", _SMTP_TA),
    *(
        _ta(p)
        for p in ("TA-SMCM", "TA-MBOX", "TA-HOLD", "TA-ERRM", "TA-EXPI", "TA-RERT")
    ),
)

#: Every stored name in dump order; ``""`` marks a section break (an empty dump line),
#: including the one after the load averages that opens the first section.
COUNTER_NAMES: tuple[str, ...] = tuple(
    name for section in _SECTIONS for name in ["", *section.split()]
)

PID_NAMES = frozenset(
    {
        "SYS.RouterMasterPID",
        "SYS.SchedulerMasterPID",
        "SC.SchedulerTimeserverPID",
        "SYS.SmtpServerMasterPID",
        "SS.SubsysRateTrackerPID",
        "SS.SubsysRouterMasterPID",
        "SS.SubsysContentfilterMasterPID",
    }
)
_SUBSYS_PIDS = frozenset(n for n in PID_NAMES if n.startswith("SS.Subsys"))
_SPACE_GAUGES = ("SYS.Spool", "SYS.TportSpool", "SYS.Log")
_SLOTS = tuple(n for n in COUNTER_NAMES if n)
_INDEX = {name: _HEADER_SLOTS + i for i, name in enumerate(_SLOTS)}


class CounterBlock(Protocol):
    """The ZMailer shared counter block (``SC.*``, ``SYS.*`` ...), persistent."""

    def get(self, name: str) -> int: ...
    def incr(self, name: str, by: int = 1) -> None: ...
    def set(self, name: str, value: int) -> None: ...

    def dump(self, now: int) -> list[str]:
        """The ``SHOW COUNTERS`` / ``mailq -M`` body lines (MQ2-REF 9.7)."""


class CounterFileError(SpoolError):
    """The counter file exists but is not ours (or is damaged)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def format_line(name: str, value: int) -> str:
    """One dump line by the name's width rule (MQ2-REF 9.7): always 42 characters."""
    if not name.endswith("-G"):
        return f"{name:<32}{value & 0xFFFFFFFF if value < 0 else value:10d}"
    if name == "SS.Processes-G" or name.endswith("connects-G"):
        return f"{name:<38}{value:4d}"
    return f"{name:<33}{value:9d}"


class Counters:
    """The counter block; implements ``mailq.server.views.CounterBlock``."""

    def __init__(
        self, buf: mmap.mmap | bytearray, path: str | None, *, readonly: bool = False
    ) -> None:
        self._buf = buf
        self.path = path
        self.readonly = readonly
        self._index = _INDEX

    @classmethod
    def open(cls, path: str | None, *, readonly: bool = False) -> Counters:
        """Map ``path`` (created if missing); None: a private in-memory block (magic 0).

        ``readonly``: map an existing file for reading only (``mailq -M`` as any user);
        nothing is created or written.
        """
        size = (_HEADER_SLOTS + len(_SLOTS)) * _SLOT.size
        if path is None:
            buf = bytearray(size)
            cls._init_header(buf, magic=0)
            return cls(buf, None)
        if readonly:
            return cls._open_readonly(path, size)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            existing = os.fstat(fd).st_size
            if existing and existing < _HEADER_SLOTS * _SLOT.size:
                raise CounterFileError(path, "too short to be a counter file")
            if existing < size:
                os.ftruncate(fd, size)
            mapped = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        if existing == 0:
            cls._init_header(mapped, magic=MAGIC)
        elif _SLOT.unpack_from(mapped, 0)[0] != _SIGNATURE:
            mapped.close()
            raise CounterFileError(path, "not a counter file of this scheduler")
        _SLOT.pack_into(mapped, 3 * _SLOT.size, len(_SLOTS))
        return cls(mapped, path)

    @classmethod
    def _open_readonly(cls, path: str, size: int) -> Counters:
        with open(path, "rb") as f:
            data = f.read(size)
        if (
            len(data) < _HEADER_SLOTS * _SLOT.size
            or _SLOT.unpack_from(data, 0)[0] != _SIGNATURE
        ):
            raise CounterFileError(path, "not a counter file of this scheduler")
        buf = bytearray(data.ljust(size, b"\0"))
        return cls(buf, path, readonly=True)

    @staticmethod
    def _init_header(buf: mmap.mmap | bytearray, magic: int) -> None:
        _SLOT.pack_into(buf, 0, _SIGNATURE)
        _SLOT.pack_into(buf, _SLOT.size, magic)
        _SLOT.pack_into(buf, 2 * _SLOT.size, int(time.time()))
        _SLOT.pack_into(buf, 3 * _SLOT.size, len(_SLOTS))

    @property
    def magic(self) -> int:
        return int(_SLOT.unpack_from(self._buf, _SLOT.size)[0])

    @property
    def creation_time(self) -> int:
        return int(_SLOT.unpack_from(self._buf, 2 * _SLOT.size)[0])

    def get(self, name: str) -> int:
        return int(_SLOT.unpack_from(self._buf, self._index[name] * 8)[0])

    def incr(self, name: str, by: int = 1) -> None:
        offset = self._index[name] * 8
        _SLOT.pack_into(self._buf, offset, _SLOT.unpack_from(self._buf, offset)[0] + by)

    def set(self, name: str, value: int) -> None:
        _SLOT.pack_into(self._buf, self._index[name] * 8, value)

    def reset_gauges(self) -> None:
        """Zero every ``-G`` gauge except the spool/log space ones (scheduler startup)."""
        for name in _SLOTS:
            if name.endswith("-G") and not name.startswith(_SPACE_GAUGES):
                self.set(name, 0)

    def refresh_system(self, postoffice: str, logdir: str | None = None) -> None:
        """``SYS.Spool*`` (queue/), ``SYS.TportSpool*`` (transport/), ``SYS.Log*``."""
        targets = [
            ("SYS.Spool", os.path.join(postoffice, "queue")),
            ("SYS.TportSpool", os.path.join(postoffice, "transport")),
        ]
        if logdir is not None:
            targets.append(("SYS.Log", logdir))
        for prefix, path in targets:
            try:
                st = os.statvfs(path)
            except OSError as e:
                log.debug("statvfs %s: %s", path, e)
                continue
            kb = st.f_frsize / 1024
            self.set(f"{prefix}FreeSpace-kB-G", int(st.f_bavail * kb))
            self.set(f"{prefix}UsedSpace-kB-G", int((st.f_blocks - st.f_bfree) * kb))
            self.set(f"{prefix}FreeFiles-G", st.f_favail)
            self.set(f"{prefix}UsedFiles-G", st.f_files - st.f_ffree)

    def dump(self, now: int) -> list[str]:
        """The SHOW COUNTERS / ``mailq -M`` body lines (MQ2-REF 9.7), without newlines."""
        lines = [
            f"ZMailer SHM segment dump; Magic=0x{self.magic:08X}",
            f"{'Time_now':<32}{now:10d}",
            f"{'Block_creation_time':<32}{self.creation_time:10d}",
        ]
        try:
            load1, load5, _ = os.getloadavg()
        except OSError:
            pass
        else:
            lines.append(f"{'SYS.Load-Avg-1-min-G':<36}{load1:6.2f}")
            lines.append(f"{'SYS.Load-Avg-5-min-G':<36}{load5:6.2f}")
        lines += [self._dump_line(name) if name else "" for name in COUNTER_NAMES]
        return lines

    def _dump_line(self, name: str) -> str:
        value = self.get(name)
        line = format_line(name, value)
        if name in PID_NAMES and value and not pid_alive(value):
            if name in _SUBSYS_PIDS:  # B15: cleared instead of reported
                if not self.readonly:
                    self.set(name, 0)
                return format_line(name, 0)
            line += " NOT PRESENT!"
        return line

    def flush(self) -> None:
        if isinstance(self._buf, mmap.mmap):
            self._buf.flush()

    def close(self) -> None:
        if isinstance(self._buf, mmap.mmap) and not self._buf.closed:
            self._buf.close()

    def __enter__(self) -> Counters:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
