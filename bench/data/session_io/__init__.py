"""Session files: XDF (written and read, the format LabRecorder records) and NWB."""

from bench.data.session_io._dispatch import read_session
from bench.data.session_io._errors import SessionFileError
from bench.data.session_io.nwb import read_nwb, write_nwb
from bench.data.session_io.rate_kept import check_rate_kept
from bench.data.session_io.xdf_reader import read_xdf
from bench.data.session_io.xdf_writer import write_xdf

__all__ = [
    "SessionFileError",
    "check_rate_kept",
    "read_nwb",
    "read_session",
    "read_xdf",
    "write_nwb",
    "write_xdf",
]
