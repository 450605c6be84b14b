"""The persistent counter block: ZMailer's SNMP shared file (``SNMPSHAREDFILE``).

The block is ZMailer 3.0.1's own format, so the real ``mailq -M``, router, smtpserver
and transport agents read and write the very file our daemon uses, and ours theirs: one
page (:data:`BLOCK_SIZE`; ZMailer refuses any other size), a 32-bit magic ``0x33120006``
at byte 0, the creation time (64-bit) at byte 8, and little-endian counters at the byte
offsets of :data:`_SECTIONS` (observed from the real reader: see
``tests/spool/fixtures/zmailer_counters/README.md``).  Cumulative counters survive
restarts; only gauges are zeroed at scheduler startup.  Opening, creating and repairing
the file is :mod:`spool.counterfile`'s job.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import struct
import time
from typing import Protocol

from spool.errors import SpoolError
from spool.procs import pid_alive

__all__ = [
    "BLOCK_SIZE",
    "COUNTER_NAMES",
    "MAGIC",
    "PID_NAMES",
    "CounterBlock",
    "CounterFileError",
    "Counters",
    "block_magic",
    "convert_old",
    "format_line",
    "new_block",
]

log = logging.getLogger(__name__)

MAGIC = 0x33120006
#: ZMailer's block (about 2.6 kB) rounded up to a whole page: the only size it accepts.
BLOCK_SIZE = max(4096, mmap.PAGESIZE)
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_CREATED_AT = 8
_OLD_SIGNATURE = b"ZMPYCNT1"  # our earlier format: 8-byte slots after 4 header slots


# ZMailer's layout, as observed (tests/spool/fixtures/zmailer_counters/): each section is
# one block of dump lines in dump order, ``NAME@WORD`` a 32-bit field at byte 4*WORD and
# ``NAME@WORD:8`` a 64-bit one (a time_t).  Two names share one word on purpose: the real
# reader prints SS.ProcessForkFailures' word for SS.ContentPolicyForkFailures too, and
# SS.SMTP_STARTTLS' for SS.SMTPTLSes; we print what it prints.
def _ta_section(prefix: str, first: int) -> str:
    """A transport agent's eight counters, in consecutive words from ``first``."""
    names = [
        "TaProcessStarts",
        "TaProcCount-G",
        "TaIdleStates",
        "TaMessages",
        "TaDeliveryStarts",
        "RcptsOk",
        "RcptsRetry",
        "RcptsFail",
    ]
    return " ".join(f"{prefix}.{n}@{first + i}" for i, n in enumerate(names))


_SECTIONS = (
    """
        SYS.RouterMasterPID@12 SYS.RouterMasterStartTime@14:8 SYS.RouterMasterStarts@16
        SYS.SchedulerMasterPID@17 SYS.SchedulerMasterStartTime@18:8
        SYS.SchedulerMasterStarts@20 SC.SchedulerTimeserverPID@4
        SC.SchedulerTimeserverTime@6:8 SC.SchedulerTimeserverStarts@214
        SC.SchedulerTimeserverStartTime@215 SYS.SmtpServerMasterPID@21
        SYS.SmtpServerMasterStartTime@22:8 SYS.SmtpServerMasterStarts@24
        SS.SubsysRateTrackerPID@134 SS.SubsysRouterMasterPID@135
        SS.SubsysContentfilterMasterPID@136 SS.Irouter-reply-delay-G@138
        SS.Irouter-queue-G@140 SS.Cfilter-reply-delay-G@139 SS.Cfilter-queue-G@141
        SYS.SpoolFreeSpace-kB-G@28 SYS.SpoolUsedSpace-kB-G@29 SYS.SpoolFreeFiles-G@32
        SYS.SpoolUsedFiles-G@33 SYS.TportSpoolFreeSpace-kB-G@36
        SYS.TportSpoolUsedSpace-kB-G@37 SYS.TportSpoolFreeFiles-G@38
        SYS.TportSpoolUsedFiles-G@39 SYS.LogFreeSpace-kB-G@30 SYS.LogUsedSpace-kB-G@31
        SYS.LogFreeFiles-G@34 SYS.LogUsedFiles-G@35
    """,
    """
        SS.Processes-G@66 SS.ParallelSMTPconnects-G@67 SS.ParallelSMTPSconnects-G@68
        SS.ParallelSUBMITconnects-G@69 SS.ProcessForks@70 SS.ProcessForkFailures@73
        SS.ContentPolicyForkFailures@73 SS.SMTPconnects@75 SS.SMTPSconnects@76
        SS.SUBMITconnects@77 SS.MaxSameIpSourceCloses@71 SS.MaxParallelConnectionCloses@72
        SS.SMTPcommands@80 SS.SMTPcommands-unknown@81 SS.IncomingClientPipelines@78
        SS.IncomingSmtpTarpits@79 SS.SMTP_HELO@82 SS.SMTP_HELO_ok@83 SS.SMTP_HELO_bad@84
        SS.SMTP_EHLO@85 SS.SMTP_EHLO_ok@86 SS.SMTP_EHLO_bad@87 SS.SMTP_STARTTLS@91
        SS.SMTPTLSes@91 SS.SMTP_STARTTLS_fail@92 SS.SMTP_NOOP@98 SS.SMTP_RSET@96
        SS.SMTP_HELP@93 SS.SMTP_ETRN@88 SS.SMTP_EXPN@94 SS.SMTP_VRFY@95 SS.SMTP_TICK@101
        SS.SMTP_TURN@97 SS.SMTP_VERBOSE@99 SS.SMTP_DEBUG@100 SS.SMTP_MAIL@103
        SS.SMTP_MAIL_ok@104 SS.SMTP_MAIL_bad@105 SS.SMTP_RCPT@106 SS.SMTP_RCPT_ok@107
        SS.SMTP_RCPT_bad@108 SS.Smtp-Opt-ENVID@109 SS.Smtp-Opt-SIZE@110
        SS.Smtp-Opt-AUTH@111 SS.Smtp-Opt-DELIVERBY@112 SS.Smtp-Opt-BODY-8BITMIME@113
        SS.Smtp-Opt-BODY-BINARYMIME@114 SS.Smtp-Opt-BODY-7BIT@115 SS.Smtp-Opt-RETURN@116
        SS.Smtp-Opt-NOTIFY@117 SS.Smtp-Opt-ORCPT@118 SS.SMTP_DATA@119 SS.SMTP_DATA_ok@120
        SS.SMTP_DATA_bad@121 SS.SMTP_BDAT@122 SS.SMTP_BDAT_ok@123 SS.SMTP_BDAT_bad@124
        SS.SMTP_DATA-kB@125 SS.SMTP_BDAT-kB@126 SS.SMTP_input_spool-kB@127
        SS.ReceivedMessages@128 SS.ReceivedRecipients@129 SS.TransmittedMessages@130
        SS.TransmittedRecipients@131
    """,
    """
        RT.RouterProcesses-G@168 RT.RouterProcessForks@169 RT.RouterProcessFaults@170
        RT.ReceivedMessages@171 RT.ReceivedRecipients@172 RT.TransmittedMessages@173
        RT.TransmittedRecipients@174 RT.ReceivedVolume-kB@175 RT.TransmittedVolume-kB@176
        RT.TransmittedVolume2-kB@177 RT.StoredMessages-G@178 RT.StoredVolume-kB-G@179
    """,
    """
        SC.ReceivedMessages@216 SC.ReceivedRecipients@217 SC.TransmittedMessages@218
        SC.TransmittedRecipients@219 SC.StoredMessages-G@220 SC.StoredThreads-G@221
        SC.StoredVertices-G@222 SC.StoredRecipients-G@223 SC.ReceivedVolume-kB@224
        SC.StoredVolume-kB-G@225 SC.TransmittedVolume-kB@226 SC.TransportAgentForks@227
        SC.TransportAgentProcesses-G@228 SC.TransportAgentsActive-G@229
        SC.TransportAgentsIdle-G@230 SC.MQ2Parallel-G@235 SC.MQ2Connects@234
        SC.MQ2TcpWrapRej@236 SC.MQ2AuthRej@237 SC.MQ2TimedOut@238 SC.MQ2ReadEOF@239
        SC.MQ2ReadFails@240 SC.MQ2WriteFails@241 SC.MQ2Commands@242 SC.MQ2CommandsRej@243
        SC.MQ2CommandAUTH@244 SC.MQ2CommandQUIT@245 SC.MQ2CommandETRN@246
        SC.MQ2CommandKillThr@247 SC.MQ2CommandKillMsg@248 SC.MQ2CommandKillProcess@249
        SC.MQ2CommandRerouteThr@250 SC.MQ2CommandRerouteMsg@251
        SC.MQ2CommandShowQueueThreads@252 SC.MQ2CommandShowQueueThreads2@253
        SC.MQ2CommandShowQueueShort@254 SC.MQ2CommandShowQueueVeryShort@255
        SC.MQ2CommandShowThread@256 SC.MQ2CommandShowCounters@257
    """,
    """
        TA-SMTP.TaProcessStarts@294 TA-SMTP.TaProcCount-G@295 TA-SMTP.TaIdleStates@296
        TA-SMTP.TaMessages@297 TA-SMTP.TaDeliveryStarts@298 TA-SMTP.SmtpStarts@299
        TA-SMTP.SmtpConnects@300 TA-SMTP.SmtpConnectFails@302 TA-SMTP.SmtpConnectsCnt-G@303
        TA-SMTP.LmtpConnects@301 TA-SMTP.SmtpPIPELINING@304 TA-SMTP.SmtpSTARTTLS@305
        TA-SMTP.SmtpSTARTTLSok@306 TA-SMTP.SmtpSTARTTLSfail@307 TA-SMTP.SmtpEHLO@308
        TA-SMTP.SmtpEHLOok@309 TA-SMTP.SmtpEHLOfail@310 TA-SMTP.SmtpHELO@311
        TA-SMTP.SmtpHELOok@312 TA-SMTP.SmtpHELOfail@313 TA-SMTP.SmtpLHLO@314
        TA-SMTP.SmtpLHLOok@315 TA-SMTP.SmtpLHLOfail@316 TA-SMTP.capa8BITMIME@317
        TA-SMTP.capaAUTH@318 TA-SMTP.capaDSN@321 TA-SMTP.capaCHUNKING@319
        TA-SMTP.capaDELIVERBY@320 TA-SMTP.capaENHANCEDSTATUSCODES@322
        TA-SMTP.capaPIPELINING@323 TA-SMTP.capaSIZE@324 TA-SMTP.capaSTARTTLS@325
        TA-SMTP.sent-option-ENVID@326 TA-SMTP.sent-option-SIZE@327
        TA-SMTP.sent-option-RET@328 TA-SMTP.sent-option-NOTIFY@329
        TA-SMTP.sent-option-ORCPT@330 TA-SMTP.SmtpMAIL@331 TA-SMTP.SmtpMAILok@332
        TA-SMTP.SmtpRCPT@333 TA-SMTP.SmtpRCPTok@334 TA-SMTP.SmtpDATA@335
        TA-SMTP.SmtpDATAok@336 TA-SMTP.SmtpBDAT@337 TA-SMTP.SmtpBDATok@338
        TA-SMTP.SmtpDATAvolume-kB@339 TA-SMTP.SmtpBDATvolume-kB@340 TA-SMTP.RcptsOk@341
        TA-SMTP.RcptsRetry@342 TA-SMTP.RcptsFail@343
    """,
    *(
        _ta_section(prefix, first)
        for prefix, first in (
            ("TA-SMCM", 386),
            ("TA-MBOX", 430),
            ("TA-HOLD", 474),
            ("TA-ERRM", 518),
            ("TA-EXPI", 562),
            ("TA-RERT", 606),
        )
    ),
)


def _parse_layout() -> tuple[tuple[str, ...], dict[str, tuple[int, int]]]:
    names: list[str] = []
    fields: dict[str, tuple[int, int]] = {}
    for section in _SECTIONS:
        names.append("")
        for token in section.split():
            name, _, where = token.partition("@")
            word, _, width = where.partition(":")
            names.append(name)
            fields[name] = (int(word) * 4, int(width or 4))
    return tuple(names), fields


#: Every name in dump order; ``""`` marks a section break (an empty dump line),
#: including the one after the load averages that opens the first section.
COUNTER_NAMES, _FIELDS = _parse_layout()

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
_NAMES = tuple(n for n in COUNTER_NAMES if n)


class CounterBlock(Protocol):
    """The ZMailer shared counter block (``SC.*``, ``SYS.*`` ...), persistent."""

    def get(self, name: str) -> int: ...
    def incr(self, name: str, by: int = 1) -> None: ...
    def set(self, name: str, value: int) -> None: ...

    def dump(self, now: int) -> list[str]:
        """The ``SHOW COUNTERS`` / ``mailq -M`` body lines (MQ2-REF 9.7)."""


class CounterFileError(SpoolError):
    """The counter file cannot be used: unreadable, unallocatable, or not a block."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def format_line(name: str, value: int) -> str:
    """One dump line by the name's width rule (MQ2-REF 9.7): always 42 characters.

    Gauges (``-G``) print as signed 32-bit numbers, everything else unsigned.
    """
    if not name.endswith("-G"):
        return f"{name:<32}{value & 0xFFFFFFFF if value < 0 else value:10d}"
    if name == "SS.Processes-G" or name.endswith("connects-G"):
        return f"{name:<38}{value:4d}"
    return f"{name:<33}{value:9d}"


def new_block(created: int, magic: int = MAGIC) -> bytearray:
    """A fresh zeroed block with its header set."""
    buf = bytearray(BLOCK_SIZE)
    _U32.pack_into(buf, 0, magic)
    _I64.pack_into(buf, _CREATED_AT, created)
    return buf


def block_magic(buf: bytes | bytearray | mmap.mmap) -> int:
    return int(_U32.unpack_from(buf, 0)[0]) if len(buf) >= 4 else 0


def convert_old(data: bytes) -> bytearray | None:
    """A block of our earlier private format (``ZMPYCNT1``) in ZMailer's; None if
    ``data`` is not one.  Its values are carried over name by name."""
    if not data.startswith(_OLD_SIGNATURE) or len(data) < 32:
        return None
    buf = new_block(int(_I64.unpack_from(data, 16)[0]))
    block = Counters(buf, None)
    for i, name in enumerate(_NAMES):
        offset = (4 + i) * 8
        if offset + 8 <= len(data):
            block.set(name, int(_I64.unpack_from(data, offset)[0]))
    return buf


class Counters:
    """The counter block; implements ``mailq.server.views.CounterBlock``.

    Open a file with :func:`spool.counterfile.open_counters` (the daemon) or
    :func:`spool.counterfile.read_counters` (``mailq -M``).
    """

    def __init__(
        self, buf: mmap.mmap | bytearray, path: str | None, *, readonly: bool = False
    ) -> None:
        self._buf = buf
        self.path = path
        self.readonly = readonly

    @classmethod
    def open(cls, path: str | None, *, readonly: bool = False) -> Counters:
        """``path`` opened as the daemon (created if missing) or read-only as
        ``mailq -M``; None: a private in-memory block (magic 0)."""
        if path is None:
            return cls(new_block(int(time.time()), magic=0), None)
        from spool.counterfile import open_counters, read_counters

        return read_counters(path) if readonly else open_counters(path)

    @property
    def magic(self) -> int:
        return block_magic(self._buf)

    @property
    def creation_time(self) -> int:
        return int(_I64.unpack_from(self._buf, _CREATED_AT)[0])

    def get(self, name: str) -> int:
        offset, width = _FIELDS[name]
        if width == 8:
            return int(_I64.unpack_from(self._buf, offset)[0])
        value = int(_U32.unpack_from(self._buf, offset)[0])
        if name.endswith("-G") and value >= 1 << 31:  # gauges are signed
            value -= 1 << 32
        return value

    def incr(self, name: str, by: int = 1) -> None:
        self.set(name, self.get(name) + by)

    def set(self, name: str, value: int) -> None:
        offset, width = _FIELDS[name]
        if width == 8:
            _I64.pack_into(self._buf, offset, value)
        else:
            _U32.pack_into(self._buf, offset, value & 0xFFFFFFFF)

    def reset_gauges(self) -> None:
        """Zero the scheduler's own gauges (``SC.*-G``) and the agents' process counts
        (``TA-*.TaProcCount-G``) at scheduler startup, as ZMailer's scheduler does; the
        router's, smtpserver's and the space gauges belong to processes still running."""
        for name in _NAMES:
            if name.endswith("-G") and (
                name.startswith("SC.") or name.endswith(".TaProcCount-G")
            ):
                self.set(name, 0)

    def refresh_system(self, postoffice: str, logdir: str | int | None = None) -> None:
        """``SYS.Spool*`` (queue/), ``SYS.TportSpool*`` (transport/), ``SYS.Log*``
        (the file system of ``logdir``: a path, or the descriptor of the log file)."""
        targets: list[tuple[str, str | int]] = [
            ("SYS.Spool", os.path.join(postoffice, "queue")),
            ("SYS.TportSpool", os.path.join(postoffice, "transport")),
        ]
        if logdir is not None:
            targets.append(("SYS.Log", logdir))
        for prefix, path in targets:
            try:
                st = os.fstatvfs(path) if isinstance(path, int) else os.statvfs(path)
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
            if name in _SUBSYS_PIDS and not self.readonly:
                self.set(name, 0)  # B15: a writer clears it instead of reporting it
                return format_line(name, 0)
            line += " NOT PRESENT!"
        return line

    def flush(self) -> None:
        if isinstance(self._buf, mmap.mmap):
            self._buf.flush()

    def close(self) -> None:
        if isinstance(self._buf, mmap.mmap) and not self._buf.closed:
            with contextlib.suppress(OSError):
                self._buf.flush()
            self._buf.close()

    def __enter__(self) -> Counters:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
