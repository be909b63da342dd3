"""What host and target say to each other: tagged result lines, TensorRT version spellings, engine names.

A target-side command prints everything for the user on stdout/stderr and ends with ONE line
`FBOCC_<NAME> <json object>` per result (`emit`); the host reads the last such line (`parse_tagged`).
Tags: FBOCC_ENV (deploy.bench env), FBOCC_KEY (deploy.bench key), FBOCC_RUN (deploy.bench run),
FBOCC_ENGINE (deploy.create_engine, deploy.bench engine), FBOCC_RESULT / FBOCC_ERROR (deploy.run_sequence).

Python 3.8, standard library only; imported by the host (fbocc.target) and by the target scripts.
"""

import json
import re
import sys
from typing import Any, Dict, Optional, Tuple

ENV = "FBOCC_ENV"
KEY = "FBOCC_KEY"
RUN = "FBOCC_RUN"
ENGINE = "FBOCC_ENGINE"
RESULT = "FBOCC_RESULT"
ERROR = "FBOCC_ERROR"


def emit(tag, doc, stream=None):
    # type: (str, Dict[str, Any], Any) -> None
    """Print `TAG {json}` as one line and flush (the host may be reading while we run)."""
    out = stream or sys.stdout
    out.write(tag + " " + json.dumps(doc) + "\n")
    out.flush()


def parse_tagged(stdout, tag):
    # type: (str, str) -> Optional[Dict[str, Any]]
    """The JSON object of the last `TAG {...}` line of `stdout`; None when absent or not an object."""
    head = tag + " "
    for line in reversed(stdout.splitlines()):
        if line.startswith(head):
            try:
                doc = json.loads(line[len(head):])
            except ValueError:
                return None
            return doc if isinstance(doc, dict) else None
    return None


_TAG = re.compile(r"v?(\d{4}|\d{6})")
_DOTTED = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?(?:\.\d+)*")
_BANNER = re.compile(r"\[TensorRT v(\d{4}|\d{6})\]")


def parse_trt_version(text):
    # type: (str) -> Tuple[int, int, int]
    """'8.6.13.3', '10.8', 'v8603' (< 10: M m pp) or 'v100200' (>= 10: MM mm pp) -> (major, minor, patch).

    Raises ValueError for anything else."""
    text = text.strip()
    tag = _TAG.fullmatch(text)
    if tag:
        digits = tag.group(1)
        if len(digits) == 4:
            return int(digits[0]), int(digits[1]), int(digits[2:])
        return int(digits[:2]), int(digits[2:4]), int(digits[4:])
    dotted = _DOTTED.fullmatch(text)
    if dotted:
        return int(dotted.group(1)), int(dotted.group(2)), int(dotted.group(3) or 0)
    raise ValueError("not a TensorRT version: {!r}".format(text))


def trt_version_from_banner(text):
    # type: (str) -> Optional[str]
    """'... [TensorRT v8613] ...' (trtexec's `&&&&` lines) -> '8.6.13'; None when no banner is there."""
    match = _BANNER.search(text)
    if not match:
        return None
    return "{}.{}.{}".format(*parse_trt_version(match.group(1)))


def engine_file_name(precision, key):
    # type: (str, str) -> str
    """The engine's file name in the target's engine cache (`engines/`)."""
    return "{}-{}.engine".format(precision, key)
